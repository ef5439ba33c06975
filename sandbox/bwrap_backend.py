"""Bubblewrap backend: the fallback when no Docker daemon is reachable.

Each slot runs the harness in a ``bwrap`` sandbox:

- all namespaces unshared (user, pid, net, ipc, uts, cgroup): no network at all (not even the
  host's loopback), its own process tree (when the sandbox's first process dies, the kernel
  kills the rest; ``--die-with-parent`` ties it to this process: the kernel ties it to the
  *thread* that started it, so every sandbox is started from one long-lived owner thread, see
  ``subproc._OwnerThread``; callers' threads may come and go), no nested user namespaces
  (``--disable-userns``), ``--new-session``;
- the root is a read-only bind of the image's root filesystem (``aj sandbox build`` unpacks it
  next to the Docker image; without it, a read-only bind of the host's ``/usr`` and its
  ``/bin``, ``/lib*`` links -- the host's programs become readable, its ``/etc``, ``/home``,
  ``/root``, ``/work``, ... do not), a read-only ``/dev``, ``/proc`` of its own pid namespace,
  size-limited tmpfs on ``/tmp`` and ``/dev/shm``;
- uid/gid 65534 inside, no capabilities; started as root, ``setpriv`` first drops to a
  dedicated unprivileged host uid (one per slot, leased with a lock file in
  ``/run/autojudge-sandbox``) and the sandbox goes into a memory cgroup (no swap) and a pids
  cgroup per slot, and a CPU quota, when the machine has cgroups (v1 or v2);
- rlimits per test (address space, CPU, file size, processes -- counted per user namespace,
  i.e. per sandbox --, open files, no core dumps), set by the harness; the sandbox's PID 1
  (bwrap) and the harness (a child subreaper) reap zombies.

``mode="persistent"`` (default) keeps one harness per slot alive across programs, like the
Docker backend; ``"cold"`` starts a sandbox per program. Any irregularity kills the sandbox.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from autojudge.sandbox.api import Limits, SandboxUnavailable
from autojudge.sandbox.image import DEFAULT_IMAGE, rootfs_dir, rootfs_ok
from autojudge.sandbox.pool import PooledSandbox
from autojudge.sandbox.protocol import SANDBOX_ENV, Collector, MiB, build_job, harness_source, new_token
from autojudge.sandbox.subproc import ProcessSession, SessionSlot

log = logging.getLogger("autojudge.sandbox")
SANDBOX_UID = 65534
UID_BASE = int(os.environ.get("AJ_SANDBOX_UID_BASE", "61000"))
UID_COUNT = 1000
LEASE_DIR = Path("/run/autojudge-sandbox")
CGROUP_NAME = "autojudge-sandbox"
OVERHEAD_MB = 64
ENV = SANDBOX_ENV
# moves itself into the cgroups ($2.. up to the count in $1), then becomes the sandbox
_CGROUP_WRAPPER = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
)


@functools.lru_cache(maxsize=4)
def bwrap_features(bwrap: str) -> frozenset[str]:
    """Options this bwrap knows (``--size`` and ``--disable-userns`` are recent)."""
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    text = out.stdout + out.stderr
    return frozenset(
        o for o in ("--size", "--disable-userns", "--die-with-parent", "--new-session") if o in text
    )


# --------------------------------------------------------------------------- uid leases
def _uid_taken(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def uid_processes(uid: int) -> list[int]:
    """The host's live (not zombie) processes whose real uid is ``uid``."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = dict(x.split(":", 1) for x in (d / "status").read_text().splitlines() if ":" in x)
            except OSError:
                continue
            if fields.get("Uid", "").split()[:1] == [str(uid)] and fields.get("State", "").split()[
                :1
            ] not in (["Z"], ["X"]):
                out.append(int(d.name))
    return out


def kill_uid_processes(uid: int, wait_s: float = 5.0) -> list[int]:
    """SIGKILL every process of a leased sandbox uid (only ever a sandbox's: the uid is ours).

    Catches what ``--die-with-parent`` cannot: bwrap binds its sandbox to its own life only after
    it has created it, so a bwrap killed in that window (its owner killed, or a slot closed, just
    as the sandbox starts) leaves the sandbox's first process waiting forever. Reaped when the
    slot closes and, after a crash, when the uid is leased next.
    """
    killed: list[int] = []
    t_end = time.monotonic() + wait_s
    while True:
        pids = uid_processes(uid)
        if not pids or time.monotonic() > t_end:
            return killed
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.02)


def lease_uid() -> tuple[int, Any]:
    """An unprivileged host uid for one slot, held (flock) until the returned file is closed.

    Whatever still runs as that uid belongs to a dead owner (the lock was free): it is killed.
    """
    LEASE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    for uid in range(UID_BASE, UID_BASE + UID_COUNT):
        if _uid_taken(uid):
            continue
        f = open(LEASE_DIR / f"uid-{uid}.lock", "a")  # noqa: SIM115 - held for the slot's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        leftovers = kill_uid_processes(uid)
        if leftovers:
            log.warning(
                "bwrap sandbox: killed %d leftover process(es) of sandbox uid %d", len(set(leftovers)), uid
            )
        return uid, f
    raise SandboxUnavailable(f"no free sandbox uid in {UID_BASE}..{UID_BASE + UID_COUNT - 1}")


# --------------------------------------------------------------------------- cgroups
class Cgroups:
    """Per-slot memory (no swap) and pids cgroups, v1 or v2; ``reason`` says why not when unusable."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.reason: str | None = None
        root = Path("/sys/fs/cgroup")
        if os.geteuid() != 0:
            self.reason = "not root: no cgroups (memory is limited per process only)"
        elif (root / "cgroup.controllers").exists():
            self.version = 2
        elif (root / "memory" / "memory.limit_in_bytes").exists() and (root / "pids").is_dir():
            self.version = 1
        else:
            self.reason = "no usable cgroup hierarchy (memory and pids controllers)"
        if self.version is not None:
            try:
                self.remove(self.make(f"probe-{os.getpid()}", 64 * MiB, 16))
            except OSError as e:
                self.reason = f"cannot create cgroups: {e}"
                self.version = None

    @property
    def usable(self) -> bool:
        return self.version is not None

    def _dirs(self, name: str) -> list[Path]:
        root = Path("/sys/fs/cgroup")
        if self.version == 1:
            dirs = [root / "memory" / CGROUP_NAME / name, root / "pids" / CGROUP_NAME / name]
            if (root / "cpu" / "cpu.cfs_quota_us").exists():
                dirs.append(root / "cpu" / CGROUP_NAME / name)
            return dirs
        return [root / CGROUP_NAME / name]

    def make(self, name: str, memory: int, pids: int, cpus: float | None = None) -> list[str]:
        """Create (or reset) the cgroups of ``name``; returns their ``cgroup.procs`` files."""
        root = Path("/sys/fs/cgroup")
        if self.version == 2:
            parent = root / CGROUP_NAME
            parent.mkdir(exist_ok=True)
            for d in (root, parent):
                for ctl in ("+memory", "+pids", "+cpu"):
                    with contextlib.suppress(OSError):
                        (d / "cgroup.subtree_control").write_text(ctl)
        dirs = self._dirs(name)
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        period = 100_000
        if self.version == 1:
            mem, pid = dirs[:2]
            if cpus and len(dirs) > 2:
                with contextlib.suppress(OSError):
                    (dirs[2] / "cpu.cfs_period_us").write_text(str(period))
                    (dirs[2] / "cpu.cfs_quota_us").write_text(str(int(cpus * period)))
            memsw = mem / "memory.memsw.limit_in_bytes"
            if memsw.exists():  # memsw >= limit at every step: lift it, set the limit, then memsw
                memsw.write_text("-1")
            (mem / "memory.limit_in_bytes").write_text(str(memory))
            if memsw.exists():
                memsw.write_text(str(memory))
            with contextlib.suppress(OSError):
                (mem / "memory.swappiness").write_text("0")
            (pid / "pids.max").write_text(str(pids))
        else:
            (d,) = dirs
            (d / "memory.max").write_text(str(memory))
            with contextlib.suppress(OSError):
                (d / "memory.swap.max").write_text("0")
            (d / "pids.max").write_text(str(pids))
            if cpus and (d / "cpu.max").exists():
                (d / "cpu.max").write_text(f"{int(cpus * period)} {period}")
        return [str(d / "cgroup.procs") for d in dirs]

    def remove(self, procs: list[str], wait_s: float = 15.0) -> None:
        """Remove the cgroups once their processes are gone (EBUSY until then).

        Whatever is still listed in a cgroup's ``cgroup.procs`` belongs to this slot's sandbox and
        is killed on every try, so a process that escaped the session's own kill (or is slow to
        die on a loaded machine) cannot keep the cgroup alive.
        """
        t_end = time.monotonic() + wait_s
        for p in procs:
            d = Path(p).parent
            while d.exists():
                try:
                    os.rmdir(d)
                except OSError:
                    if time.monotonic() > t_end:
                        log.warning(
                            "bwrap sandbox: cgroup %s still busy after %.0f s; left in place", d, wait_s
                        )
                        break
                    _kill_listed(Path(p))
                    time.sleep(0.02)


def _kill_listed(procs_file: Path) -> None:
    """SIGKILL every process listed in a cgroup's ``cgroup.procs`` (ignoring ones already gone)."""
    try:
        pids = [int(x) for x in procs_file.read_text().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- the backend
class _BwrapSlot(SessionSlot):
    owned = True  # --die-with-parent: start from the owner thread, not from a caller's (short-lived) one

    def __init__(self, box: BwrapSandbox) -> None:
        super().__init__(box.mode == "persistent")
        self.box = box
        self.uid: int | None = None
        self._lease = None
        self.procs: list[str] = []
        if box.as_root:
            self.uid, self._lease = lease_uid()
        if box.cgroups.usable:
            lim = box.limits
            memory = (lim.memory_mb + lim.tmpfs_mb + lim.shm_mb + OVERHEAD_MB) * MiB
            name = f"uid-{self.uid}" if self.uid is not None else f"pid-{os.getpid()}-{id(self)}"
            self.procs = box.cgroups.make(name, memory, lim.pids + 8, lim.cpus)

    def _argv(self) -> list[str]:
        argv: list[str] = []
        if self.procs:
            argv += ["/bin/sh", "-c", _CGROUP_WRAPPER, "sh", str(len(self.procs)), *self.procs]
        if self.uid is not None:
            argv += [
                self.box.setpriv,
                f"--reuid={self.uid}",
                f"--regid={self.uid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        return argv + self.box.bwrap_argv()

    def close(self) -> None:
        super().close()
        if self.uid is not None and self._lease is not None:
            kill_uid_processes(self.uid)  # a sandbox still starting when its bwrap was killed
        if self.procs:
            self.box.cgroups.remove(self.procs)
            self.procs = []
        if self._lease is not None:
            self._lease.close()
            self._lease = None


class BwrapSandbox(PooledSandbox):
    """The bubblewrap backend (see the module docstring).

    ``rootfs``: the root filesystem to bind read-only (default: the one ``aj sandbox build``
    made; ``"host"`` binds the host's ``/usr`` instead).
    """

    name = "bwrap"
    MODES = ("persistent", "cold")

    def __init__(
        self,
        workers: int = 2,
        limits: Limits | None = None,
        *,
        rootfs: str | os.PathLike | None = None,
        mode: str = "persistent",
        jobs_per_session: int = 1000,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.jobs_per_session = jobs_per_session
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable("bubblewrap is not installed (`apt-get install bubblewrap`)")
        self.bwrap = bwrap
        self.features = bwrap_features(bwrap)
        self.as_root = os.geteuid() == 0
        self.setpriv = shutil.which("setpriv") or ""
        if self.as_root and not self.setpriv:
            raise SandboxUnavailable(
                "running as root needs `setpriv` (util-linux) to drop to an unprivileged uid"
            )
        if rootfs is None:
            default = rootfs_dir(DEFAULT_IMAGE)
            self.rootfs: Path | None = default if rootfs_ok(default) else None
        elif str(rootfs) == "host":
            self.rootfs = None
        else:
            self.rootfs = Path(rootfs)
            if not rootfs_ok(self.rootfs):
                raise SandboxUnavailable(
                    f"{self.rootfs} is not a root filesystem with /usr/bin/python3: run `aj sandbox build`"
                )
        if self.rootfs is None and not os.access("/usr/bin/python3", os.X_OK):
            raise SandboxUnavailable(
                "no sandbox root filesystem (run `aj sandbox build`) and no /usr/bin/python3 "
                "on the host to bind instead"
            )
        self.cgroups = Cgroups()
        super().__init__(workers, limits)
        try:
            self._probe()
        except BaseException:
            self.close()
            raise

    # -- command line ----------------------------------------------------------------------------------
    def bwrap_argv(self) -> list[str]:
        lim = self.limits
        # --as-pid-1: the harness is PID 1: no bwrap process (with host paths in its command line) inside,
        # and the program can neither kill nor stop it (PID 1 only gets signals it handles)
        a = [
            self.bwrap,
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
            "--as-pid-1",
        ]
        if "--disable-userns" in self.features:
            a.append("--disable-userns")
        a += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
        if self.rootfs is not None:
            a += ["--ro-bind", str(self.rootfs), "/"]
        else:
            a += ["--ro-bind", "/usr", "/usr"]
            for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
                p = Path("/") / name
                if p.is_symlink():
                    a += ["--symlink", os.readlink(p), str(p)]
                elif p.is_dir():
                    a += ["--ro-bind", str(p), str(p)]
        a += ["--proc", "/proc", "--dev", "/dev"]
        sized = "--size" in self.features
        a += (["--size", str(lim.tmpfs_mb * MiB)] if sized else []) + ["--tmpfs", "/tmp"]
        a += (["--size", str(lim.shm_mb * MiB)] if sized else []) + ["--tmpfs", "/dev/shm"]
        a += ["--remount-ro", "/dev"]
        if self.rootfs is None:
            a += ["--remount-ro", "/"]
        a += ["--chdir", "/tmp", "--clearenv"]
        for k, v in ENV.items():
            a += ["--setenv", k, v]
        return a + ["--", "/usr/bin/python3", "-I", "-c", harness_source()]

    def _make_slot(self) -> _BwrapSlot:
        slot = _BwrapSlot(self)
        if self.mode == "persistent":
            try:
                slot.start()
            except BaseException:
                slot.close()
                raise
        return slot

    def _job_options(self) -> dict[str, Any]:
        # RLIMIT_NPROC counts per user namespace: each sandbox has its own
        return {"nproc": self.limits.pids, "drop_uid": None}

    def _probe(self) -> None:
        """Run an empty program once: catch a kernel without unprivileged user namespaces, ..."""
        from autojudge.sandbox.api import Program, TestCase

        slot = _BwrapSlot(self)
        try:
            program = Program("print(1)", [TestCase.stdio("", "1")])
            token = new_token()
            job = build_job(
                program,
                self.limits,
                token,
                kill_all=True,
                wipe=list(self.wipe),
                workdir="/tmp",
                **self._job_options(),
            )
            collector = Collector(token, 1, 1 << 20)
            session = ProcessSession(slot._argv(), owned=True)
            try:
                outcome = session.run(job, collector, time.monotonic() + 60, last=True)
            finally:
                session.close(kill=False)
            rec = collector.records.get(0, {})
            if outcome.error or outcome.timed_out or rec.get("stdout") != "1\n":
                why = (outcome.stderr.strip() or outcome.error or "no output").splitlines()[-1][:300]
                raise SandboxUnavailable(f"bubblewrap cannot start a sandbox here: {why}")
        finally:
            slot.close()

    def describe(self) -> dict[str, Any]:
        return {
            "bwrap": self.bwrap,
            "rootfs": str(self.rootfs) if self.rootfs else "host /usr (read-only)",
            "unprivileged host uid": self.as_root,
            "cgroups": f"v{self.cgroups.version}" if self.cgroups.usable else f"no ({self.cgroups.reason})",
            "tmpfs size limits": "--size" in self.features,
            "nested user namespaces blocked": "--disable-userns" in self.features,
        }
