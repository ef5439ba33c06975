"""Running untrusted model-written code: a sandbox with Docker, bubblewrap and (unsafe) local backends.

::

    from autojudge.sandbox import Program, TestCase, get_sandbox

    with get_sandbox() as box:  # Docker if its daemon answers, else bubblewrap (with a warning)
        result = box.run(Program("print(sum(map(int, input().split())))", [TestCase.stdio("1 2", "3")]))
        results = box.run_many(many_programs)  # concurrently, on the warm pool

See ``docs/sandbox.md`` for the threat model, the limits and what is not protected.
"""

from autojudge.sandbox.api import (
    BACKENDS,
    LCB_PRELUDE,
    NO_EXPECTED,
    STATUSES,
    Limits,
    Program,
    ProgramResult,
    Sandbox,
    SandboxError,
    SandboxFallbackWarning,
    SandboxUnavailable,
    TestCase,
    TestResult,
    UnsafeSandboxWarning,
    backend_usage,
    get_sandbox,
)
from autojudge.sandbox.compare import same_output

__all__ = [
    "BACKENDS",
    "LCB_PRELUDE",
    "NO_EXPECTED",
    "STATUSES",
    "Limits",
    "Program",
    "ProgramResult",
    "Sandbox",
    "SandboxError",
    "SandboxFallbackWarning",
    "SandboxUnavailable",
    "TestCase",
    "TestResult",
    "UnsafeSandboxWarning",
    "backend_usage",
    "get_sandbox",
    "same_output",
]
