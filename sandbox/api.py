"""The sandbox API: what a program and its tests are, what running them returns.

Three kinds of tests:

- ``TestCase.stdio(input, expected)``: the program reads stdin and prints (LiveCodeBench
  "stdin" problems); stdout is compared with LiveCodeBench's rules (:mod:`.compare`).
- ``TestCase.call(fn_name, args, expected)``: call a function of the program (LiveCodeBench
  "functional" problems: a top-level function or a method of ``Solution()``; EvalPlus-style
  inputs); the return value is compared on the host.
- ``TestCase.expr(expr, expected)``: evaluate an expression after the program, e.g. the
  ``candidate(1, 2)`` of a HumanEval ``assert candidate(1, 2) == 3`` (:mod:`.asserts` turns
  HumanEval/MBPP asserts into these).

Expected values never enter the sandbox. Return values come back serialized (tagged JSON,
see :mod:`.harness`) and are compared on the host as plain data, so an object with a custom
``__eq__`` cannot pass a test. Every :class:`TestResult` carries the actual output
(``actual``: stdout, or the canonical JSON of the value), so two programs can be compared test
by test (:func:`autojudge.sandbox.compare.same_output`).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

BACKENDS = ("auto", "docker", "bwrap", "unsafe-local")

#: LiveCodeBench prepends these imports to every program (``import_string`` in its
#: ``testing_util.py``); pass ``prelude=LCB_PRELUDE`` to run programs exactly as it does.
LCB_PRELUDE = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
    "from random import *\nfrom statistics import *\nfrom itertools import *\nfrom functools import *\n"
    "from operator import *\nfrom io import *\nfrom sys import *\nfrom json import *\n"
    "from builtins import *\nfrom typing import *\nimport string\nimport re\nimport datetime\n"
    "import collections\nimport heapq\nimport bisect\nimport copy\nimport math\nimport random\n"
    "import statistics\nimport itertools\nimport functools\nimport operator\nimport io\nimport sys\n"
    "import json\nsys.setrecursionlimit(50000)\n"
)

STATUSES = (
    "passed",  # ran and matched the expected output
    "wrong_answer",  # ran, output differs
    "ran",  # ran without error; the test has no expected output to compare with
    "runtime_error",  # uncaught exception, a crash, a signal
    "compile_error",  # the program (or the test expression) does not compile
    "timeout",  # per-test time limit (inside the sandbox) or the host's hard limit
    "memory_limit",  # MemoryError or killed by the out-of-memory killer
    "output_limit",  # printed (or returned) more than max_output_bytes
    "skipped",  # not run: an earlier test timed out (Limits.stop_after_timeouts)
    "sandbox_error",  # the sandbox failed (not the program's fault as far as we can tell)
)


class SandboxUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why and what to do."""


def _check_plain(value: Any, what: str) -> None:
    """Raise unless ``value`` is plain data that survives the trip into or out of the sandbox."""
    from autojudge.sandbox.harness import encode

    def walk(v: Any) -> None:
        if type(v) is dict and len(v) == 1 and "$opaque" in v:
            raise TypeError(
                f"{what} must be plain data (None, bool, int, float, str, bytes, list, tuple, "
                f"dict, set, complex), found an object of type {v['$opaque']}"
            )
        if type(v) is dict:
            for x in v.values():
                walk(x)
        elif type(v) is list:
            for x in v:
                walk(x)

    walk(encode(value))


class SandboxError(RuntimeError):
    """The sandbox itself failed (cannot start a container, ...), not a program."""


class _NoExpected:
    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_EXPECTED"

    def __bool__(self) -> bool:
        return False


#: "this test has no expected output": the program runs, its output is recorded, status ``ran``.
NO_EXPECTED: Any = _NoExpected()

_VALUE_MODES = ("python", "lcb", "strict", "truthy", "falsy")
_STDIO_MODES = ("lcb", "exact")


@dataclass(frozen=True, eq=False)
class TestCase:
    """One test. Build it with :meth:`stdio`, :meth:`call` or :meth:`expr`.

    ``compare`` for value tests: ``"python"`` (the default) compares like ``==`` between plain
    built-in values (``1 == 1.0``, ``(1, 2) != [1, 2]``, sets unordered); ``"lcb"`` first turns a
    returned tuple into a list (LiveCodeBench's rule for "functional" problems); ``"strict"``
    also requires equal types (``True`` is not ``1``: for ``assert f(x) is True``);
    ``"truthy"`` / ``"falsy"`` check only the value's truth (``assert f(x)``, ``assert not f(x)``).
    ``rel_tol`` / ``abs_tol`` compare numbers (also inside lists and tuples) like
    ``math.isclose``. For stdio tests ``compare`` is ``"lcb"`` (LiveCodeBench's line-wise rule)
    or ``"exact"``.
    """

    __test__ = False  # not a pytest test class

    kind: str
    input: str = ""
    fn_name: str | None = None
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    expression: str | None = None
    expected: Any = NO_EXPECTED
    compare: str = "python"
    rel_tol: float = 0.0
    abs_tol: float = 0.0
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "stdio":
            if not isinstance(self.input, str):
                raise TypeError("a stdio test's input must be a str")
            if self.compare not in _STDIO_MODES:
                raise ValueError(f"stdio compare must be one of {_STDIO_MODES}, got {self.compare!r}")
            if self.expected is not NO_EXPECTED and not isinstance(self.expected, str):
                raise TypeError("a stdio test's expected output must be a str")
        elif self.kind in ("call", "expr"):
            if self.compare not in _VALUE_MODES:
                raise ValueError(f"compare must be one of {_VALUE_MODES}, got {self.compare!r}")
            if self.kind == "call" and not (isinstance(self.fn_name, str) and self.fn_name):
                raise ValueError("a call test needs fn_name")
            if self.kind == "expr" and not (isinstance(self.expression, str) and self.expression.strip()):
                raise ValueError("an expr test needs an expression")
        else:
            raise ValueError(f"unknown test kind {self.kind!r} (stdio, call, expr)")
        if (
            self.kind != "stdio"
            and self.expected is not NO_EXPECTED
            and self.compare not in ("truthy", "falsy")
        ):
            _check_plain(self.expected, "expected")
        if self.kind == "call":
            _check_plain(tuple(self.args), "args")
            _check_plain(dict(self.kwargs), "kwargs")
            if not all(isinstance(k, str) for k in self.kwargs):
                raise TypeError("kwargs keys must be str")
        for name in ("rel_tol", "abs_tol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number >= 0")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError("timeout must be > 0")

    @classmethod
    def stdio(
        cls, input: str, expected: Any = NO_EXPECTED, *, compare: str = "lcb", timeout: float | None = None
    ) -> TestCase:
        return cls("stdio", input=input, expected=expected, compare=compare, timeout=timeout)

    @classmethod
    def call(
        cls,
        fn_name: str,
        args: Sequence[Any] = (),
        expected: Any = NO_EXPECTED,
        *,
        kwargs: Mapping[str, Any] | None = None,
        compare: str = "python",
        rel_tol: float = 0.0,
        abs_tol: float = 0.0,
        timeout: float | None = None,
    ) -> TestCase:
        return cls(
            "call",
            fn_name=fn_name,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            expected=expected,
            compare=compare,
            rel_tol=rel_tol,
            abs_tol=abs_tol,
            timeout=timeout,
        )

    @classmethod
    def expr(
        cls,
        expr: str,
        expected: Any = NO_EXPECTED,
        *,
        compare: str = "python",
        rel_tol: float = 0.0,
        abs_tol: float = 0.0,
        timeout: float | None = None,
    ) -> TestCase:
        return cls(
            "expr",
            expression=expr,
            expected=expected,
            compare=compare,
            rel_tol=rel_tol,
            abs_tol=abs_tol,
            timeout=timeout,
        )

    @property
    def has_expected(self) -> bool:
        return self.expected is not NO_EXPECTED


@dataclass(eq=False)
class Program:
    """Source code and its tests.

    ``prelude`` runs before ``code`` and ``setup`` after it, in the same namespace (e.g.
    ``prelude=LCB_PRELUDE``; ``setup="candidate = add"`` for HumanEval tests, or MBPP's
    ``test_setup_code``). Stdio programs run as ``__main__``.
    """

    code: str
    tests: Sequence[TestCase]
    prelude: str = ""
    setup: str = ""
    id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.code, str):
            raise TypeError("code must be a str")
        self.tests = list(self.tests)
        for t in self.tests:
            if not isinstance(t, TestCase):
                raise TypeError(f"tests must be TestCase objects, got {type(t).__name__}")


@dataclass
class TestResult:
    """What happened in one test.

    ``actual`` is the program's output in comparable form: its stdout for stdio tests, the
    canonical JSON of the returned value for value tests (``None`` when there is none).
    ``value`` is the returned value as tagged JSON (see :mod:`.harness`).
    """

    __test__ = False

    passed: bool
    status: str
    reason: str | None = None
    actual: str | None = None
    value: Any = None
    stdout: str = ""
    stderr: str = ""
    time_s: float | None = None
    exit_code: int | None = None
    signal: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProgramResult:
    """The results of one program's tests, in test order."""

    results: list[TestResult]
    backend: str
    id: str | None = None
    wall_s: float = 0.0
    error: str | None = None  # a sandbox-level problem, if any (its tests say sandbox_error/timeout)

    @property
    def passed(self) -> bool:
        """Every test passed (and there was at least one)."""
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def n_passed(self) -> int:
        return sum(r.passed for r in self.results)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "backend": self.backend,
            "passed": self.passed,
            "n_passed": self.n_passed,
            "wall_s": self.wall_s,
            "error": self.error,
            "results": [r.to_dict() for r in self.results],
        }


@dataclass(frozen=True)
class Limits:
    """Resource limits of a sandbox (per test unless said otherwise).

    ``timeout``: wall-clock seconds per test (enforced inside the sandbox with SIGKILL; the
    host kills the whole sandbox when a program overruns the sum of its tests' timeouts plus
    slack). ``memory_mb``: address space of the program's processes (RLIMIT_AS) and, with the
    sandbox's own overhead, the memory limit of its container / cgroup, without swap.
    ``pids``: processes and threads. ``max_output_bytes``: stdout (and the returned value, and
    stderr) per test. ``stop_after_timeouts``: after that many timed-out tests a program's
    remaining tests are ``skipped`` (``None``: run them all).
    """

    timeout: float = 6.0
    memory_mb: int = 512
    pids: int = 64
    cpus: float = 1.0
    max_output_bytes: int = 1 << 20
    max_stderr_bytes: int = 16 << 10
    tmpfs_mb: int = 64
    shm_mb: int = 16
    file_size_mb: int = 64
    nofile: int = 256
    stop_after_timeouts: int | None = 1

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError("timeout must be > 0")
        for name in (
            "memory_mb",
            "pids",
            "max_output_bytes",
            "max_stderr_bytes",
            "tmpfs_mb",
            "shm_mb",
            "file_size_mb",
            "nofile",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.cpus > 0:
            raise ValueError("cpus must be > 0")
        if self.stop_after_timeouts is not None and self.stop_after_timeouts < 1:
            raise ValueError("stop_after_timeouts must be >= 1 or None")


@runtime_checkable
class Sandbox(Protocol):
    """Runs programs; every backend implements this."""

    name: str
    workers: int
    limits: Limits

    def run(self, program: Program) -> ProgramResult: ...

    def run_many(
        self, programs: Iterable[Program], *, progress: Callable[[int, int], None] | None = None
    ) -> list[ProgramResult]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(self, *exc: object) -> None: ...


class SandboxFallbackWarning(UserWarning):
    """The automatic backend choice fell back to a weaker backend."""


class UnsafeSandboxWarning(UserWarning):
    """Programs run without isolation (``unsafe-local``)."""


def get_sandbox(
    backend: str = "auto", *, workers: int = 2, limits: Limits | None = None, **options: Any
) -> Sandbox:
    """A sandbox of the given backend: ``"docker"``, ``"bwrap"``, ``"unsafe-local"`` or ``"auto"``.

    ``"auto"`` takes Docker when its daemon answers and the image is built, else bubblewrap
    (with a :class:`SandboxFallbackWarning` saying why Docker was not used); it never picks
    ``"unsafe-local"``, which runs programs as plain subprocesses and must be asked for.
    ``options`` go to the backend (Docker: ``image``, ``mode``, ``base_url``, ``idle_exit_s``,
    ``jobs_per_session``; bubblewrap: ``rootfs``, ``mode``; unsafe-local: ``mode``, ``quiet``).
    Raises :class:`SandboxUnavailable` with the reasons when nothing usable is found.
    """
    limits = limits or Limits()
    if backend not in BACKENDS:
        raise ValueError(f"unknown sandbox backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "docker":
        from autojudge.sandbox.docker_backend import DockerSandbox

        return DockerSandbox(workers=workers, limits=limits, **options)
    if backend == "bwrap":
        from autojudge.sandbox.bwrap_backend import BwrapSandbox

        return BwrapSandbox(workers=workers, limits=limits, **options)
    if backend == "unsafe-local":
        from autojudge.sandbox.local_backend import LocalSandbox

        return LocalSandbox(workers=workers, limits=limits, **options)
    from autojudge.sandbox.bwrap_backend import BwrapSandbox
    from autojudge.sandbox.docker_backend import DockerSandbox

    docker_opts = {
        k: v
        for k, v in options.items()
        if k in ("image", "mode", "base_url", "idle_exit_s", "jobs_per_session")
    }
    bwrap_opts = {k: v for k, v in options.items() if k in ("rootfs", "jobs_per_session")}
    if options.get("mode") in ("persistent", "cold"):
        bwrap_opts["mode"] = options["mode"]
    try:
        return DockerSandbox(workers=workers, limits=limits, **docker_opts)
    except SandboxUnavailable as e:
        docker_why = str(e)
    try:
        box = BwrapSandbox(workers=workers, limits=limits, **bwrap_opts)
    except SandboxUnavailable as e:
        raise SandboxUnavailable(
            f"no sandbox backend is usable.\n- docker: {docker_why}\n- bwrap: {e}\n"
            "Run `aj sandbox check` for details. (`unsafe-local` runs code WITHOUT isolation and is "
            "never chosen automatically.)"
        ) from None
    if "base_url" not in options:  # not a daemon the caller named (and may know to be unreachable)
        box.fallback_reason = docker_why  # type: ignore[attr-defined]
        with _usage_lock:
            _fallbacks.append(docker_why)
    warnings.warn(
        f"Docker sandbox unavailable ({docker_why}); falling back to bubblewrap",
        SandboxFallbackWarning,
        stacklevel=2,
    )
    return box


# --------------------------------------------------------------------------- what ran
_usage_lock = threading.Lock()
_programs_run: dict[str, int] = {}
_fallbacks: list[str] = []
_fallback_programs = 0


def note_program(backend: str, *, fallback: bool = False) -> None:
    """Count one program run by ``backend`` (``fallback``: on a sandbox ``auto`` fell back to)."""
    global _fallback_programs
    with _usage_lock:
        _programs_run[backend] = _programs_run.get(backend, 0) + 1
        _fallback_programs += bool(fallback)


def backend_usage() -> dict[str, Any]:
    """What this process ran, for reports and CI checks (the test suite prints it)::

        {"programs": {backend: n}, "fallbacks": [why Docker was not used, ...], "fallback_programs": n}

    ``fallbacks``: one entry per ``get_sandbox("auto")`` that fell back to bubblewrap because the
    default Docker daemon (``DOCKER_HOST``, else the local socket) did not answer;
    ``fallback_programs``: the programs run on those sandboxes.
    """
    with _usage_lock:
        return {
            "programs": dict(_programs_run),
            "fallbacks": list(_fallbacks),
            "fallback_programs": _fallback_programs,
        }
