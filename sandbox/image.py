"""Build the sandbox's root filesystem offline: ``mmdebstrap`` -> ``docker import`` (+ a directory for bubblewrap).

No registry is involved and nothing is ever pulled: ``mmdebstrap --variant=extract``
unpacks ``python3`` (and any extra Debian packages) from the Debian mirror into a tarball,
an extract hook byte-compiles the standard library (read-only at run time, so Python could
not cache ``.pyc`` files) and writes ``/etc/passwd``; the tarball is imported as the Docker
image :data:`DEFAULT_IMAGE` and unpacked as the bubblewrap root (:func:`rootfs_dir`). The
image holds no shell and no package manager: only Python and its libraries.

Idempotent: whatever already exists is kept (``force=True`` rebuilds).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: bump when the recipe changes: a new tag and rootfs directory, old ones stay usable
IMAGE_VERSION = 1
IMAGE_REPO = "autojudge-sandbox"
DEFAULT_IMAGE = f"{IMAGE_REPO}:{IMAGE_VERSION}"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SUITE = "bookworm"
IMAGE_LABEL = "autojudge.sandbox.image"

# $1 is the unpacked root; runs on the host (extract mode skips customize hooks)
_EXTRACT_HOOK = r"""set -e
root="$1"
mkdir -p "$root/etc" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
chmod 1777 "$root/tmp"
[ -s "$root/etc/passwd" ] || printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' \
  'sandbox-init:x:65533:65533::/nonexistent:/usr/sbin/nologin' \
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' > "$root/etc/passwd"
[ -s "$root/etc/group" ] || printf '%s\n' 'root:x:0:' 'sandbox-init:x:65533:' 'nogroup:x:65534:' > "$root/etc/group"
for d in "$root"/usr/lib/python3*; do
  [ -d "$d" ] || continue
  chroot "$root" /usr/bin/python3 -m compileall -q -j 0 \
    -x '/(test|tests|idlelib|lib2to3|tkinter|turtledemo|ensurepip)/' "${d#"$root"}" >/dev/null || true
done
"""


def sandbox_dir() -> Path:
    """Where the bubblewrap root filesystems live (``AJ_SANDBOX_DIR`` overrides).

    As root ``/var/lib/autojudge/sandbox`` (world-traversable: the sandbox's unprivileged uid
    must reach it), otherwise the user's cache directory.
    """
    env = os.environ.get("AJ_SANDBOX_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/autojudge/sandbox")
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("autojudge")) / "sandbox"


def rootfs_dir(image: str = DEFAULT_IMAGE) -> Path:
    """The unpacked root filesystem used by the bubblewrap backend for ``image``."""
    return sandbox_dir() / ("rootfs-" + image.replace("/", "_").replace(":", "-"))


def rootfs_ok(path: Path) -> bool:
    return (
        (path / "usr" / "bin" / "python3").exists() and (path / "proc").is_dir() and (path / "tmp").is_dir()
    )


def debian_suite() -> str:
    """The host's Debian codename when it is Debian, else :data:`DEFAULT_SUITE`."""
    try:
        info = dict(
            line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
        )
    except OSError:
        return DEFAULT_SUITE
    if info.get("ID", "").strip('"') == "debian" and info.get("VERSION_CODENAME"):
        return info["VERSION_CODENAME"].strip('"')
    return DEFAULT_SUITE


@dataclass
class BuildReport:
    image: str
    docker: str  # "built", "exists", "skipped: <why>"
    rootfs: str  # "built", "exists", "skipped: <why>"
    rootfs_path: str
    packages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return self.__dict__.copy()


class BuildError(RuntimeError):
    pass


def _docker_image_exists(api, image: str) -> bool:
    import docker

    try:
        api.inspect_image(image)
        return True
    except docker.errors.ImageNotFound:
        return False


def _mmdebstrap(
    out_tar: Path, packages: Sequence[str], suite: str, mirror: str, log: Callable[[str], None]
) -> None:
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise BuildError("mmdebstrap is not installed: `apt-get install mmdebstrap` (Debian/Ubuntu)")
    cmd = [
        exe,
        "--variant=extract",
        f"--include={','.join(packages)}",
        "--format=tar",
        f"--extract-hook={_EXTRACT_HOOK}",
        "--quiet",
        suite,
        str(out_tar),
        mirror,
    ]
    log(f"mmdebstrap: {suite} from {mirror}, packages {', '.join(packages)}")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BuildError(f"mmdebstrap failed (exit code {p.returncode}):\n{(p.stderr or p.stdout)[-3000:]}")


def _unpack(tar: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(dest.parent, 0o755)
    with contextlib.suppress(OSError):
        os.chmod(dest.parent.parent, 0o755)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        cmd = ["tar", "-x", "-f", str(tar), "-C", str(tmp), "--exclude=./dev/*"]
        if os.geteuid() == 0:
            cmd.insert(1, "--numeric-owner")
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise BuildError(f"unpacking the root filesystem failed: {p.stderr[-2000:]}")
        os.chmod(tmp, 0o755)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build(
    image: str = DEFAULT_IMAGE,
    *,
    packages: Sequence[str] = (),
    suite: str | None = None,
    mirror: str | None = None,
    docker: bool = True,
    rootfs: bool = True,
    force: bool = False,
    base_url: str | None = None,
    log: Callable[[str], None] = print,
) -> BuildReport:
    """Build the Docker image and/or the bubblewrap root; see the module docstring."""
    t0 = time.monotonic()
    pkgs = ["python3", *[p for p in packages if p != "python3"]]
    suite = suite or os.environ.get("AJ_SANDBOX_SUITE") or debian_suite()
    mirror = mirror or os.environ.get("AJ_SANDBOX_MIRROR") or DEFAULT_MIRROR
    root = rootfs_dir(image)
    report = BuildReport(
        image=image,
        docker="skipped: not requested",
        rootfs="skipped: not requested",
        rootfs_path=str(root),
        packages=pkgs,
    )
    api = None
    want_docker = want_rootfs = False
    if docker:
        from autojudge.sandbox.api import SandboxUnavailable
        from autojudge.sandbox.docker_backend import connect

        try:
            api = connect(base_url)
        except SandboxUnavailable as e:
            report.docker = f"skipped: {e}"
        else:
            if _docker_image_exists(api, image) and not force:
                report.docker = "exists"
            else:
                want_docker = True
    if rootfs:
        if rootfs_ok(root) and not force:
            report.rootfs = "exists"
        else:
            want_rootfs = True
    if want_docker or want_rootfs:
        with tempfile.TemporaryDirectory(prefix="aj-sandbox-build-") as tmpdir:
            tar = Path(tmpdir) / "rootfs.tar"
            _mmdebstrap(tar, pkgs, suite, mirror, log)
            if want_docker:
                log(f"docker import -> {image}")
                repo, _, tag = image.rpartition(":")
                if not repo or "/" in tag:
                    repo, tag = image, "latest"
                changes = [
                    f"LABEL {IMAGE_LABEL}={IMAGE_VERSION}",
                    f"LABEL autojudge.sandbox.packages={','.join(pkgs)}",
                    "ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1",
                    "WORKDIR /tmp",
                    "USER 65534:65534",
                    'CMD ["python3"]',
                ]
                old_id = api.inspect_image(image)["Id"] if _docker_image_exists(api, image) else None
                out = api.import_image(src=str(tar), repository=repo, tag=tag, changes=changes)
                if not _docker_image_exists(api, image):
                    raise BuildError(f"docker import did not produce {image}: {str(out)[-1000:]}")
                if old_id and old_id != api.inspect_image(image)["Id"]:
                    import docker as docker_sdk

                    with contextlib.suppress(docker_sdk.errors.APIError):
                        api.remove_image(old_id)  # the replaced image, untagged now (fails if in use)
                report.docker = "built"
            if want_rootfs:
                log(f"unpacking the bubblewrap root -> {root}")
                _unpack(tar, root)
                (root.parent / (root.name + ".json")).write_text(
                    json.dumps({"image": image, "packages": pkgs, "suite": suite, "version": IMAGE_VERSION})
                    + "\n"
                )
                report.rootfs = "built"
    report.seconds = round(time.monotonic() - t0, 1)
    return report
