"""Docker backend: a warm pool of locked-down containers running the in-container harness.

Each slot owns a container (a fresh one per program with ``mode="cold"``):

- image built offline by ``aj sandbox build`` (checked with ``inspect_image``; containers are
  made with the low-level API, which never pulls);
- no network, read-only root, ``/tmp`` and ``/dev/shm`` small tmpfs, memory without swap,
  pids limit, CPU quota, every capability dropped, ``no-new-privileges``, no logging driver,
  no core dumps, uid 65534;
- ``mode="persistent"`` (default): the harness itself is the container's PID 1, reading jobs
  (one program each) from the container's attached stdin. As PID 1 it cannot be killed or
  stopped from inside; it forks per test and kills every other process after each test.
  ``stdin_once``: when our connection goes (this process exits or crashes), its stdin closes,
  it exits and the ``auto_remove`` container disappears. ``mode="exec"``: PID 1 is a keep-alive
  loop (uid 65533) and each program gets its own ``docker exec`` of the harness -- the design
  the issue sketched; one exec costs 100-300 ms on this machine, hence the default;
- every container carries labels (``autojudge.sandbox=1``, owner host, pid and the pid's start
  time, pool id); a new pool removes containers whose owner process is gone, ``close()``
  removes its own, and so do ``atexit`` and SIGTERM/SIGHUP handlers; idle containers exit by
  themselves after ``idle_exit_s``.

Any irregularity (the harness died, a protocol violation, output over the cap, the
host-side hard timeout) kills the container; the slot starts a new one for the next program.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
import uuid
from typing import Any

from autojudge.sandbox.api import Limits, SandboxError, SandboxUnavailable
from autojudge.sandbox.image import DEFAULT_IMAGE
from autojudge.sandbox.pool import PooledSandbox, RunOutcome
from autojudge.sandbox.protocol import SANDBOX_ENV, Collector, MiB, harness_source

LABEL = "autojudge.sandbox"
LABEL_HOST = "autojudge.sandbox.host"
LABEL_PID = "autojudge.sandbox.pid"
LABEL_START = "autojudge.sandbox.pid-start"
LABEL_POOL = "autojudge.sandbox.pool"
KEEPALIVE_UID = 65533
RUN_UID = 65534
OVERHEAD_MB = 64  # keep-alive + harness, on top of the program's memory and the tmpfs
ENV = SANDBOX_ENV

# PID 1 of every container: reap orphans; exit once no other process ran for IDLE seconds
_KEEPALIVE = r"""
import os, sys, time
idle = float(sys.argv[1])
me = os.getpid()
last = time.monotonic()
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
    if any(p.isdigit() and int(p) != me for p in os.listdir("/proc")):
        last = time.monotonic()
    elif time.monotonic() - last > idle:
        sys.exit(0)
    time.sleep(0.5)
"""

_STDERR_TAIL = 4096


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]


def connect(base_url: str | None = None, timeout: float = 60):
    """A low-level Docker API client for a daemon that answers, or :class:`SandboxUnavailable`."""
    try:
        import docker
    except ImportError as e:  # pragma: no cover - docker is a dependency
        raise SandboxUnavailable(
            f"the `docker` Python package is missing ({e}): pip install 'docker>=7'"
        ) from None
    try:
        if base_url:
            api = docker.APIClient(base_url=base_url, version="auto", timeout=timeout)
        else:
            api = docker.from_env(timeout=timeout).api
        api.ping()
    except Exception as e:  # DockerException, requests' ConnectionError, PermissionError, ...
        where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise SandboxUnavailable(
            f"no Docker daemon reachable at {where} ({_short(e)}); start one (as root: "
            "`dockerd --bridge=none --iptables=false &`) or use the bwrap backend"
        ) from None
    return api


def _proc_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def _owner_alive(labels: dict[str, str]) -> bool:
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return False
    start = _proc_start_time(pid)
    return start is not None and start == labels.get(LABEL_START)


def remove_container(api, cid: str, *, wait_s: float = 15.0) -> None:
    """Kill and remove a container and wait until it is gone; already gone (auto-remove) is fine.

    When the container is already being removed (its ``auto_remove`` kicked in because the
    harness exited), Docker answers 409 and the removal finishes asynchronously: wait for it, up
    to ``wait_s`` seconds, so that callers (``close()``, the reaper) can count on it being gone.
    """
    import docker

    try:
        api.remove_container(cid, force=True)
        return
    except docker.errors.NotFound:
        return
    except docker.errors.APIError:
        pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            api.inspect_container(cid)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            return  # daemon trouble: nothing more we can do here; the reaper retries later
        time.sleep(0.05)
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            api.remove_container(cid, force=True)


def list_sandbox_containers(api) -> list[dict[str, Any]]:
    return api.containers(all=True, filters={"label": f"{LABEL}=1"})


def reap_stale(api, *, everything: bool = False) -> list[str]:
    """Remove sandbox containers whose owner process (on this host) is gone; ``everything``: all of them."""
    removed = []
    host = socket.gethostname()
    for c in list_sandbox_containers(api):
        labels = c.get("Labels") or {}
        if everything or (labels.get(LABEL_HOST) == host and not _owner_alive(labels)):
            remove_container(api, c["Id"])
            removed.append(c["Id"][:12])
    return removed


class _Stream:
    """A hijacked Docker connection to the harness (an exec's or the container's own stdio)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.raw: socket.socket = getattr(sock, "_sock", sock)
        self.buf = bytearray()
        self.err_tail = bytearray()
        self.eof = False
        self.jobs = 0
        self.last_used = time.monotonic()

    def usable(self, idle_exit_s: float) -> bool:
        """Whether the harness is still waiting for a job (not gone idle, nothing unexpected to read)."""
        if self.eof or time.monotonic() - self.last_used > 0.8 * idle_exit_s:
            return False
        try:
            ready, _, _ = select.select([self.raw], [], [], 0)
        except (OSError, ValueError):
            return False
        return not ready  # between jobs the harness writes nothing: readable means EOF or garbage

    def run(self, job: bytes, collector: Collector, t_end: float, *, last: bool) -> RunOutcome:
        outcome = RunOutcome()
        self.jobs += 1
        self.last_used = time.monotonic()
        try:
            self.raw.settimeout(max(0.1, t_end - time.monotonic()))
            try:
                self.raw.sendall(job)
                if last:
                    self.raw.shutdown(socket.SHUT_WR)  # EOF on the harness's stdin: it exits after this job
            except OSError as e:
                outcome.error = f"could not send the job to the container: {e}"
                return outcome
            while not collector.done:
                if self.eof:
                    outcome.error = "the harness stopped before reporting every test" + (
                        f" ({collector.problem})" if collector.problem else ""
                    )
                    return outcome
                left = t_end - time.monotonic()
                if left <= 0:
                    outcome.timed_out = True
                    return outcome
                ready, _, _ = select.select([self.raw], [], [], left)
                if not ready:
                    continue
                try:
                    chunk = self.raw.recv(1 << 16)
                except (BlockingIOError, InterruptedError, TimeoutError):
                    continue
                except OSError as e:
                    outcome.error = f"reading from the container failed: {e}"
                    return outcome
                if not chunk:
                    self.eof = True
                self.buf += chunk
                if len(self.buf) > collector.cap + 1024:
                    outcome.error = f"the container sent more than {collector.cap} bytes"
                    return outcome
                # multiplexed stream: 8-byte header (stream, 0, 0, 0, big-endian size) + payload
                while len(self.buf) >= 8:
                    size = int.from_bytes(self.buf[4:8], "big")
                    if len(self.buf) < 8 + size:
                        break
                    kind, payload = self.buf[0], bytes(self.buf[8 : 8 + size])
                    del self.buf[: 8 + size]
                    if kind == 1:
                        if not collector.feed(payload):
                            outcome.error = collector.problem
                            return outcome
                    elif kind == 2:
                        self.err_tail += payload
                        del self.err_tail[:-_STDERR_TAIL]
            if not collector.complete:
                outcome.error = collector.problem or "incomplete results"
            return outcome
        finally:
            outcome.stderr = bytes(self.err_tail).decode("utf-8", "replace")

    def close(self) -> None:
        # shutdown() before close(): otherwise killing/removing the container can hang 30-60 s
        with contextlib.suppress(OSError):
            self.raw.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.raw.close()
        with contextlib.suppress(Exception):
            self.sock.close()


class _DockerSlot:
    """One worker: a container and the stream to its harness."""

    def __init__(self, box: DockerSandbox) -> None:
        self.box = box
        self.api = connect(box.base_url)
        self.cid: str | None = None
        self.stream: _Stream | None = None
        self.lock = threading.Lock()
        self.closed = False

    def _adopt(self, cid: str, stream: _Stream | None) -> None:
        with self.lock:
            if self.closed:
                if stream is not None:
                    stream.close()
                remove_container(self.api, cid)
                raise SandboxError("sandbox closed")
            self.cid, self.stream = cid, stream

    def start(self) -> None:
        """A new container: the harness as its PID 1 (persistent, cold) or a keep-alive (exec)."""
        box = self.box
        if box.mode == "exec":
            self._adopt(box._create_container(self.api, harness=False, start=True), None)
            return
        cid = box._create_container(self.api, harness=True, start=False)
        try:
            sock = self.api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            stream = _Stream(sock)
        except Exception:
            remove_container(self.api, cid)
            raise
        try:
            self.api.start(cid)
        except Exception as e:
            stream.close()
            remove_container(self.api, cid)
            raise SandboxError(f"cannot start a sandbox container: {_short(e)}") from None
        self._adopt(cid, stream)

    def drop(self) -> None:
        with self.lock:
            cid, self.cid = self.cid, None
            stream, self.stream = self.stream, None
        if stream is not None:
            stream.close()
        if cid is not None:
            remove_container(self.api, cid)

    def _exec_stream(self) -> _Stream:
        import docker

        def make(cid: str) -> _Stream:
            exec_id = self.api.exec_create(
                cid,
                ["python3", "-I", "-c", harness_source()],
                stdin=True,
                stdout=True,
                stderr=True,
                tty=False,
                user=f"{RUN_UID}:{RUN_UID}",
                workdir="/tmp",
                environment=ENV,
            )["Id"]
            return _Stream(self.api.exec_start(exec_id, socket=True))

        if self.cid is None:
            self.start()
        try:
            return make(self.cid)  # type: ignore[arg-type]
        except docker.errors.APIError as e:  # the container died (idle exit, removed)
            if e.status_code not in (404, 409):
                raise
            self.drop()
            self.start()
            return make(self.cid)  # type: ignore[arg-type]

    def execute(self, job: bytes, collector: Collector, timeout: float) -> RunOutcome:
        mode = self.box.mode
        if mode == "exec":
            stream = self._exec_stream()
            last = True
        else:
            if self.stream is not None and not self.stream.usable(self.box.idle_exit_s):
                self.drop()
            if self.stream is None:
                self.start()
            stream = self.stream  # type: ignore[assignment]
            last = mode == "cold" or stream.jobs + 1 >= self.box.jobs_per_session
        # the clock starts once the container is up (starting one can take seconds on a busy host)
        outcome = stream.run(job, collector, time.monotonic() + timeout, last=last)
        failed = bool(outcome.error or outcome.timed_out or not collector.complete)
        if mode == "exec":
            stream.close()
            if failed:
                self.drop()  # leftovers are known to be gone only when the harness finished
        elif failed or last:
            self.drop()
        return outcome

    def close(self) -> None:
        with self.lock:
            self.closed = True
        self.drop()
        with contextlib.suppress(Exception):
            self.api.close()


class DockerSandbox(PooledSandbox):
    """The Docker backend (see the module docstring).

    ``mode``: ``"persistent"`` (default): the harness is each container's PID 1 and gets program
    after program over the container's attached stdin (a new container after any irregularity
    and every ``jobs_per_session`` programs); ``"exec"``: a keep-alive PID 1 and one
    ``docker exec`` of the harness per program; ``"cold"``: a new container per program.
    ``idle_exit_s``: an unused container stops (and is removed) after that long.
    """

    name = "docker"
    MODES = ("persistent", "exec", "cold")

    def __init__(
        self,
        workers: int = 2,
        limits: Limits | None = None,
        *,
        image: str = DEFAULT_IMAGE,
        mode: str = "persistent",
        base_url: str | None = None,
        idle_exit_s: float = 900.0,
        jobs_per_session: int = 1000,
    ) -> None:
        import docker

        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.image = image
        self.mode = mode
        self.jobs_per_session = max(1, int(jobs_per_session))
        self.base_url = base_url
        self.idle_exit_s = float(idle_exit_s)
        self.pool_id = uuid.uuid4().hex[:12]
        self._api = connect(base_url)
        try:
            self._api.inspect_image(image)
        except docker.errors.ImageNotFound:
            raise SandboxUnavailable(
                f"the sandbox image {image} is not in the Docker daemon: run `aj sandbox build` "
                "(it is built offline; nothing is ever pulled)"
            ) from None
        except docker.errors.APIError as e:
            raise SandboxUnavailable(f"cannot inspect the image {image}: {_short(e)}") from None
        with contextlib.suppress(Exception):
            reap_stale(self._api)
        super().__init__(workers, limits)
        self._labels = {
            LABEL: "1",
            LABEL_HOST: socket.gethostname(),
            LABEL_PID: str(os.getpid()),
            LABEL_START: _proc_start_time(os.getpid()) or "",
            LABEL_POOL: self.pool_id,
        }

    def _make_slot(self) -> _DockerSlot:
        slot = _DockerSlot(self)
        if self.mode != "cold":
            slot.start()
        return slot

    def _container_config(self, api, harness: bool) -> dict[str, Any]:
        from docker.types import LogConfig, Ulimit

        lim = self.limits
        mem = (lim.memory_mb + lim.tmpfs_mb + lim.shm_mb + OVERHEAD_MB) * MiB
        host_config = api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={lim.tmpfs_mb}m,mode=1777"},
            shm_size=lim.shm_mb * MiB,
            ipc_mode="private",
            mem_limit=mem,
            memswap_limit=mem,
            pids_limit=lim.pids + 8,
            nano_cpus=int(lim.cpus * 1e9),
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            log_config=LogConfig(type="none"),
            ulimits=[Ulimit(name="core", soft=0, hard=0)],
            auto_remove=True,
        )
        if harness:  # the harness is PID 1; its stdin closes (and it exits) when our connection goes
            command = ["python3", "-I", "-c", harness_source(), str(self.idle_exit_s)]
            user, extra = RUN_UID, {"stdin_open": True}  # with detach=False: StdinOnce too
        else:
            command = ["python3", "-I", "-c", _KEEPALIVE, str(self.idle_exit_s)]
            user, extra = KEEPALIVE_UID, {}
        return {
            "image": self.image,
            "command": command,
            "user": f"{user}:{user}",
            "working_dir": "/tmp",
            "environment": ENV,
            "hostname": "sandbox",
            "network_disabled": True,
            "labels": self._labels,
            "stop_signal": "SIGKILL",
            "tty": False,
            "host_config": host_config,
            **extra,
        }

    def _create_container(self, api, *, harness: bool, start: bool) -> str:
        import docker

        try:
            cid = api.create_container(**self._container_config(api, harness))["Id"]
        except docker.errors.ImageNotFound:
            raise SandboxError(
                f"the sandbox image {self.image} disappeared: run `aj sandbox build`"
            ) from None
        except docker.errors.APIError as e:
            raise SandboxError(f"cannot create a sandbox container: {_short(e)}") from None
        if start:
            try:
                api.start(cid)
            except docker.errors.APIError as e:
                remove_container(api, cid)
                raise SandboxError(f"cannot start a sandbox container: {_short(e)}") from None
        return cid

    def containers(self) -> list[str]:
        """Ids of the containers of this pool that still exist (for tests and diagnostics)."""
        return [
            c["Id"] for c in self._api.containers(all=True, filters={"label": f"{LABEL_POOL}={self.pool_id}"})
        ]

    def _close_extra(self) -> None:
        # whatever this pool started and lost track of
        with contextlib.suppress(Exception):
            for cid in self.containers():
                remove_container(self._api, cid)
        with contextlib.suppress(Exception):
            self._api.close()
