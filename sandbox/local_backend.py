"""``unsafe-local``: the harness as a plain subprocess with rlimits. NOT a sandbox.

Programs can read every file the user can, reach the network (loopback included), and
signal the user's processes. Use it only for code you trust, on a machine you do not care
about, when neither Docker nor bubblewrap is available. When run as root, test processes
drop to uid/gid 65534 ("nobody") -- still no isolation. ``get_sandbox`` never picks it on
its own.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings

from autojudge.sandbox.api import Limits, UnsafeSandboxWarning
from autojudge.sandbox.pool import PooledSandbox
from autojudge.sandbox.protocol import harness_source
from autojudge.sandbox.subproc import SessionSlot

NOBODY = 65534

BANNER = (
    "\n" + "!" * 78 + "\n"
    "!! autojudge: sandbox backend `unsafe-local`: model-written code runs WITHOUT ISOLATION\n"
    "!! (a plain subprocess with rlimits): it can read your files, use the network and\n"
    "!! signal your processes. Use Docker or bubblewrap for untrusted code (`aj sandbox check`).\n"
    + "!" * 78
    + "\n"
)


class _LocalSlot(SessionSlot):
    def __init__(self, box: LocalSandbox) -> None:
        super().__init__(box.mode == "persistent")
        self.python = box._python
        self.dir = tempfile.mkdtemp(prefix="aj-unsafe-local-")
        if box._drop_uid is not None:
            os.chmod(self.dir, 0o1777)

    def _argv(self) -> list[str]:
        return [self.python, "-I", "-c", harness_source()]

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.dir,
            "TMPDIR": self.dir,
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def _cwd(self) -> str:
        return self.dir

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalSandbox(PooledSandbox):
    """Runs programs as subprocesses of this host. See the module docstring: not a sandbox."""

    name = "unsafe-local"
    kill_all = False  # never kill(-1) on the host: only the harness's own descendants are killed

    def __init__(
        self, workers: int = 2, limits: Limits | None = None, *, mode: str = "persistent", quiet: bool = False
    ) -> None:
        if mode not in ("persistent", "cold"):
            raise ValueError(f"mode must be 'persistent' or 'cold', got {mode!r}")
        self.mode = mode
        warnings.warn(
            "sandbox backend `unsafe-local` runs model-written code WITHOUT ISOLATION",
            UnsafeSandboxWarning,
            stacklevel=3,
        )
        if not quiet:
            sys.stderr.write(BANNER)
        super().__init__(workers, limits)
        # as root, tests run as "nobody" with the system's python (nobody may not read this one's files)
        system_python = "/usr/bin/python3"
        if os.geteuid() == 0 and os.access(system_python, os.X_OK):
            self._drop_uid, self._python = NOBODY, system_python
        else:
            self._drop_uid, self._python = None, sys.executable

    def _make_slot(self) -> _LocalSlot:
        slot = _LocalSlot(self)
        if self.mode == "persistent":
            slot.start()
        return slot

    def _job_options(self) -> dict:
        return {"nproc": None, "drop_uid": self._drop_uid}

    def _workdir(self, slot: _LocalSlot) -> str:  # type: ignore[override]
        return slot.dir

    def _wipe(self, slot: _LocalSlot) -> list[str]:  # type: ignore[override]
        return [slot.dir]
