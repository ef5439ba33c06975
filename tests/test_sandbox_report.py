"""The session report of which sandbox backend ran the programs, and ``AJ_EXPECT_DOCKER=1`` (tests/sandbox_report.py).

``auto`` falls back to bubblewrap with only a warning when no Docker daemon answers; the suite must
say which backend ran, and fail in CI (which sets ``AJ_EXPECT_DOCKER=1``) when it was not Docker.
The end-to-end tests run small pytest sessions in subprocesses, with the Docker daemon hidden
(``DOCKER_HOST`` pointing nowhere) or not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sandbox_report import EXPECT_ENV, SandboxReport, problem

from autojudge.sandbox import Program, TestCase, UnsafeSandboxWarning, backend_usage, get_sandbox

TESTS = Path(__file__).resolve().parent
NO_DAEMON = "unix:///nonexistent/docker.sock"


def test_the_suite_registers_the_report(request):
    assert isinstance(request.config.pluginmanager.get_plugin("aj-sandbox-report"), SandboxReport)


def test_backend_usage_counts_programs_and_fallbacks(monkeypatch):
    before = backend_usage()
    with pytest.warns(UnsafeSandboxWarning), get_sandbox("unsafe-local", workers=1, quiet=True) as box:
        assert box.run(Program("print(1)", [TestCase.stdio("", "1")])).passed
        box.run(Program("print(1)", []))  # no test: nothing runs
    after = backend_usage()
    assert after["programs"].get("unsafe-local", 0) == before["programs"].get("unsafe-local", 0) + 1
    assert after["fallback_programs"] == before["fallback_programs"]
    # a daemon named on purpose is not "Docker missing"
    with (
        pytest.warns(Warning, match="falling back"),
        get_sandbox("auto", workers=1, base_url=NO_DAEMON) as box,
    ):
        assert box.name == "bwrap" and box.fallback_reason is None
    assert backend_usage()["fallbacks"] == after["fallbacks"]
    # the default daemon (DOCKER_HOST) not answering is; no program ran on it (this session must not fail)
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    with pytest.warns(Warning, match="falling back"), get_sandbox("auto", workers=1) as box:
        assert box.name == "bwrap" and NO_DAEMON in box.fallback_reason
    usage = backend_usage()
    assert len(usage["fallbacks"]) == len(after["fallbacks"]) + 1 and NO_DAEMON in usage["fallbacks"][-1]
    assert usage["fallback_programs"] == before["fallback_programs"]


def test_problem_rule():
    docker = {"programs": {"docker": 3}, "fallbacks": [], "fallback_programs": 0}
    bwrap = {"programs": {"bwrap": 3}, "fallbacks": [], "fallback_programs": 0}  # asked for by name
    unused = {"programs": {"docker": 3}, "fallbacks": ["no Docker daemon reachable"], "fallback_programs": 0}
    fell_back = {
        "programs": {"docker": 2, "bwrap": 1},
        "fallbacks": ["no Docker daemon reachable"],
        "fallback_programs": 1,
    }
    assert all(problem(u, expect_docker=False) is None for u in (docker, bwrap, unused, fell_back))
    assert all(problem(u, expect_docker=True) is None for u in (docker, bwrap, unused))
    assert problem(fell_back, expect_docker=True) == (
        f"{EXPECT_ENV}=1 but 1 program(s) ran on bubblewrap because the auto sandbox fell back: "
        "no Docker daemon reachable"
    )


def inner_session(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """A pytest session running one program through the code tasks' sandbox (``auto``) with the report."""
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from sandbox_report import SandboxReport

        def pytest_configure(config):
            config.pluginmanager.register(SandboxReport(config), "aj-sandbox-report")
    """)
    )
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent("""
        from autojudge.core.compare.sandboxed import run_programs
        from autojudge.sandbox import Program, TestCase

        def test_a_program_runs():
            (r,) = run_programs([("p", Program("print(1)", [TestCase.stdio("", "1")]))])
            assert r.passed, r.error

        def test_nothing_to_run():
            pass
    """)
    )
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("AJ_CODE_SANDBOX", EXPECT_ENV, "DOCKER_HOST")
    }
    full_env.update(AJ_CODE_WORKERS="1", **env)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore",
            *args,
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_fallback_is_reported_and_fails_only_when_docker_is_expected(tmp_path):
    quiet = inner_session(tmp_path, DOCKER_HOST=NO_DAEMON)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "sandbox backends: bwrap: 1 program(s)" in quiet.stdout
    assert f"auto fell back to bubblewrap: no Docker daemon reachable at {NO_DAEMON}" in quiet.stdout
    assert "FAILED (sandbox)" not in quiet.stdout
    loud = inner_session(tmp_path, DOCKER_HOST=NO_DAEMON, **{EXPECT_ENV: "1"})
    assert loud.returncode == 1, loud.stdout + loud.stderr
    assert "2 passed" in loud.stdout  # every test passed, and still the session fails
    assert (
        f"FAILED (sandbox): {EXPECT_ENV}=1 but 1 program(s) ran on bubblewrap because the auto sandbox fell back"
        in loud.stdout
    )


def test_fallback_in_an_xdist_worker_fails_the_session(tmp_path):
    r = inner_session(tmp_path, "-n", "2", DOCKER_HOST=NO_DAEMON, **{EXPECT_ENV: "1"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "sandbox backends: bwrap: 1 program(s)" in r.stdout
    assert "FAILED (sandbox)" in r.stdout


@pytest.mark.integration
def test_docker_when_expected_passes_and_says_so(tmp_path):
    # FAILS (never skips) without a Docker daemon, like the other Docker tests
    r = inner_session(tmp_path, **{EXPECT_ENV: "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sandbox backends: docker: 1 program(s)" in r.stdout and "fell back" not in r.stdout
