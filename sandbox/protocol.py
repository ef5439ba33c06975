"""The host side of the harness protocol: build a job, collect result lines, set host limits."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from autojudge.sandbox.api import Limits, Program
from autojudge.sandbox.harness import encode

MiB = 1 << 20
#: seconds a program may take on top of its tests' timeouts before the host kills the sandbox
HOST_SLACK_S = 5.0
PER_TEST_SLACK_S = 0.5
#: the whole environment of a sandboxed harness (Docker and bubblewrap alike): nothing of the host's
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@lru_cache(maxsize=1)
def harness_source() -> str:
    """The harness script that runs inside the sandbox (``python3 -I -c SOURCE``)."""
    return (Path(__file__).with_name("harness.py")).read_text("utf-8")


def test_timeouts(program: Program, limits: Limits) -> list[float]:
    return [float(t.timeout or limits.timeout) for t in program.tests]


def build_job(
    program: Program,
    limits: Limits,
    token: str,
    *,
    kill_all: bool,
    wipe: list[str],
    workdir: str,
    nproc: int | None,
    drop_uid: int | None = None,
) -> bytes:
    """The JSON line (newline-terminated) of the job for one program; no expected outputs in it."""
    tests: list[dict[str, Any]] = []
    for t in program.tests:
        if t.kind == "stdio":
            tests.append({"kind": "stdio", "input": t.input})
        elif t.kind == "call":
            tests.append(
                {
                    "kind": "call",
                    "fn": t.fn_name,
                    "args": encode(list(t.args)),
                    "kwargs": encode(dict(t.kwargs)),
                }
            )
        else:
            tests.append({"kind": "expr", "expr": t.expression})
    job = {
        "token": token,
        "code": program.code,
        "prelude": program.prelude,
        "setup": program.setup,
        "tests": tests,
        "timeouts": test_timeouts(program, limits),
        "memory_bytes": int(limits.memory_mb) * MiB,
        "max_output": int(limits.max_output_bytes),
        "max_stderr": int(limits.max_stderr_bytes),
        "file_size": int(limits.file_size_mb) * MiB,
        "nproc": nproc,
        "nofile": int(limits.nofile),
        "stop_after_timeouts": limits.stop_after_timeouts,
        "kill_all": kill_all,
        "wipe": wipe,
        "workdir": workdir,
        "drop_uid": drop_uid,
    }
    return json.dumps(job, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"


def new_token() -> str:
    return secrets.token_hex(16)


def hard_timeout(program: Program, limits: Limits) -> float:
    """Wall-clock seconds after which the host kills the sandbox running ``program``."""
    return sum(test_timeouts(program, limits)) + PER_TEST_SLACK_S * len(program.tests) + HOST_SLACK_S


def output_cap(program: Program, limits: Limits) -> int:
    """Most bytes the host reads from one run (JSON escaping can grow text up to 6x)."""
    per_test = 6 * (2 * limits.max_output_bytes + limits.max_stderr_bytes) + 64 * 1024
    return per_test * max(1, len(program.tests)) + 64 * 1024


@dataclass
class Collector:
    """Parses the harness's stdout: ``<token> <json>`` lines; anything else is ignored."""

    token: str
    n_tests: int
    cap: int
    records: dict[int, dict] = field(default_factory=dict)
    done: bool = False
    problem: str | None = None
    nbytes: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _stray: int = 0

    def feed(self, data: bytes) -> bool:
        """Take more output; returns False once the run must be stopped (cap exceeded, protocol broken)."""
        self.nbytes += len(data)
        if self.nbytes > self.cap:
            self.problem = f"the sandbox wrote more than {self.cap} bytes"
            return False
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if not self._line(line):
                return False
        return True

    def _line(self, line: bytes) -> bool:
        prefix = self.token.encode() + b" "
        if not line.startswith(prefix):
            self._stray += 1
            return True
        if self.done:
            self.problem = "result line after the end of the run"
            return False
        try:
            rec = json.loads(line[len(prefix) :].decode("utf-8"))
        except (ValueError, RecursionError):
            self.problem = "malformed result line"
            return False
        if type(rec) is not dict:
            self.problem = "malformed result line"
            return False
        if "done" in rec:
            self.done = True
            return True
        i = rec.get("i")
        if type(i) is not int or not 0 <= i < self.n_tests or i in self.records:
            self.problem = f"unexpected result line for test {i!r}"
            return False
        self.records[i] = rec
        return True

    @property
    def complete(self) -> bool:
        return self.done and len(self.records) == self.n_tests
