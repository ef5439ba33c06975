"""Which sandbox backends are usable here, and why not (``aj sandbox check``)."""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from autojudge.sandbox.api import Limits, Program, SandboxError, SandboxUnavailable, TestCase
from autojudge.sandbox.image import DEFAULT_IMAGE, rootfs_dir, rootfs_ok

_SMOKE = Program(
    "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n", [TestCase.stdio("1 2 3", "6")], id="smoke"
)


@dataclass
class BackendStatus:
    name: str
    usable: bool
    reason: str  # why not, or what it is when usable
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _smoke(box) -> str | None:
    """Run one tiny program; the reason it failed, or None."""
    t0 = time.monotonic()
    try:
        res = box.run(_SMOKE)
    except (SandboxError, SandboxUnavailable) as e:
        return str(e)
    if not res.passed:
        r = res.results[0] if res.results else None
        return f"a test program did not pass: {res.error or (r.reason if r else 'no result')}"
    box._smoke_s = time.monotonic() - t0
    return None


def check_docker(
    image: str = DEFAULT_IMAGE, *, run: bool = True, base_url: str | None = None
) -> BackendStatus:
    details: dict[str, Any] = {"image": image}
    try:
        import docker  # noqa: F401
    except ImportError as e:  # pragma: no cover - a dependency
        return BackendStatus("docker", False, f"the docker Python package is missing: {e}", details)
    from autojudge.sandbox.docker_backend import DockerSandbox, connect, list_sandbox_containers

    try:
        api = connect(base_url)
    except SandboxUnavailable as e:
        details["docker binary"] = (
            shutil.which("dockerd") or "dockerd not installed (apt-get install docker.io)"
        )
        return BackendStatus("docker", False, str(e), details)
    try:
        v = api.version()
        details["server"] = f"Docker {v.get('Version')} (API {v.get('ApiVersion')})"
        details["sandbox containers now"] = len(list_sandbox_containers(api))
    except Exception as e:  # noqa: BLE001 - diagnostics only
        details["server"] = f"? ({e})"
    finally:
        api.close()
    try:
        box = DockerSandbox(workers=1, limits=Limits(timeout=10), image=image, base_url=base_url)
    except SandboxUnavailable as e:
        return BackendStatus("docker", False, str(e), details)
    try:
        if run:
            why = _smoke(box)
            if why:
                return BackendStatus("docker", False, why, details)
            details["test program"] = f"passed in {box._smoke_s:.2f} s (container start included)"
    finally:
        box.close()
    return BackendStatus("docker", True, "Docker daemon reachable, image present", details)


def check_bwrap(*, run: bool = True) -> BackendStatus:
    from autojudge.sandbox.bwrap_backend import BwrapSandbox

    details: dict[str, Any] = {}
    root = rootfs_dir(DEFAULT_IMAGE)
    details["rootfs"] = str(root) if rootfs_ok(root) else f"{root} missing (run `aj sandbox build`)"
    try:
        box = BwrapSandbox(workers=1, limits=Limits(timeout=10))
    except SandboxUnavailable as e:
        return BackendStatus("bwrap", False, str(e), details)
    try:
        details.update(box.describe())
        if run:
            why = _smoke(box)
            if why:
                return BackendStatus("bwrap", False, why, details)
            details["test program"] = f"passed in {box._smoke_s:.2f} s"
    finally:
        box.close()
    notes = []
    if not box.cgroups.usable:
        notes.append(f"no cgroups: {box.cgroups.reason}")
    if "--size" not in box.features:
        notes.append("this bwrap cannot limit tmpfs sizes")
    return BackendStatus("bwrap", True, "usable" + (f" ({'; '.join(notes)})" if notes else ""), details)


def check_local() -> BackendStatus:
    return BackendStatus(
        "unsafe-local", True, "always available, but NOT a sandbox: only on explicit request (--unsafe-local)"
    )


def check_all(*, run: bool = True, image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    """Every backend's status and what ``get_sandbox("auto")`` would choose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        statuses = [check_docker(image, run=run), check_bwrap(run=run), check_local()]
    by = {s.name: s for s in statuses}
    auto = "docker" if by["docker"].usable else "bwrap" if by["bwrap"].usable else None
    return {"backends": [s.to_dict() for s in statuses], "auto": auto}
