"""A pytest plugin (registered by conftest.py): which sandbox backend really ran the suite's programs.

The code tasks' sandbox is ``auto`` by default, which falls back to bubblewrap with only a warning
when no Docker daemon answers: the suite would pass on bubblewrap and nobody would notice. At the
end of the session this prints how many programs each backend ran (summed over pytest-xdist
workers) and why ``auto`` fell back, if it did. With ``AJ_EXPECT_DOCKER=1`` (CI sets it) the
session FAILS when programs ran on a sandbox that ``auto`` chose because the Docker daemon did not
answer. (Tests that name an unreachable daemon on purpose, ``base_url=...``, do not count; the
Docker tests themselves fail, never skip, without a daemon.)
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest

EXPECT_ENV = "AJ_EXPECT_DOCKER"
_KEY = "aj_sandbox_usage"


def local_usage() -> dict[str, Any]:
    """This process's :func:`autojudge.sandbox.backend_usage` (empty if no sandbox was ever imported)."""
    api = sys.modules.get("autojudge.sandbox.api")
    if api is None or not hasattr(api, "backend_usage"):
        return empty()
    return api.backend_usage()


def empty() -> dict[str, Any]:
    return {"programs": {}, "fallbacks": [], "fallback_programs": 0}


def merge(total: dict[str, Any], part: dict[str, Any]) -> None:
    for backend, n in part.get("programs", {}).items():
        total["programs"][backend] = total["programs"].get(backend, 0) + int(n)
    total["fallbacks"] += list(part.get("fallbacks", []))
    total["fallback_programs"] += int(part.get("fallback_programs", 0))


def problem(usage: dict[str, Any], expect_docker: bool) -> str | None:
    """Why the session must fail, or ``None``."""
    if not expect_docker or not usage["fallback_programs"]:
        return None
    why = usage["fallbacks"][0] if usage["fallbacks"] else "?"
    return (
        f"{EXPECT_ENV}=1 but {usage['fallback_programs']} program(s) ran on bubblewrap because the auto "
        f"sandbox fell back: {why}"
    )


def describe(programs: dict[str, int]) -> str:
    return ", ".join(f"{b}: {n} program(s)" for b, n in sorted(programs.items())) or "no program ran"


class SandboxReport:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.total: dict[str, Any] = empty()
        self.failure: str | None = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:  # xdist controller: a worker's usage
        raw = getattr(node, "workeroutput", {}).get(_KEY)
        if raw:
            merge(self.total, json.loads(raw))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        usage = local_usage()
        if hasattr(self.config, "workerinput"):  # an xdist worker: the controller reports
            self.config.workeroutput[_KEY] = json.dumps(usage)  # type: ignore[attr-defined]
            return
        merge(self.total, usage)
        self.failure = problem(self.total, os.environ.get(EXPECT_ENV, "").strip() == "1")
        if self.failure and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if hasattr(self.config, "workerinput"):
            return
        tr = terminalreporter
        tr.write_line(f"sandbox backends: {describe(self.total['programs'])}")
        for why in dict.fromkeys(self.total["fallbacks"]):
            tr.write_line(f"sandbox: auto fell back to bubblewrap: {why}", yellow=True)
        if self.total["fallback_programs"]:
            tr.write_line(
                f"sandbox: {self.total['fallback_programs']} program(s) ran on a fallback sandbox",
                yellow=True,
            )
        if self.failure:
            tr.write_line(f"FAILED (sandbox): {self.failure}", red=True, bold=True)
