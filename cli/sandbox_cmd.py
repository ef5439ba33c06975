"""``aj sandbox``: build the sandbox image offline, check which backend works, run a program, clean up.

:func:`backend_options` and :func:`open_sandbox` give any command the same ``--sandbox`` /
``--unsafe-local`` options.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def backend_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--sandbox auto|docker|bwrap`` and ``--unsafe-local`` (the only way to get no isolation)."""
    f = click.option(
        "--unsafe-local",
        is_flag=True,
        help="Run programs as plain subprocesses WITHOUT ISOLATION (trusted code only).",
    )(f)
    f = click.option(
        "--sandbox",
        "backend",
        type=click.Choice(["auto", "docker", "bwrap"]),
        default="auto",
        show_default=True,
        help="Sandbox backend; auto: Docker, else bubblewrap (with a warning).",
    )(f)
    return f


def open_sandbox(backend: str, unsafe_local: bool, **kwargs: Any):
    """The sandbox the options ask for; a click error saying why when there is none."""
    from autojudge.sandbox import SandboxUnavailable, get_sandbox

    try:
        return get_sandbox("unsafe-local" if unsafe_local else backend, **kwargs)
    except SandboxUnavailable as e:
        raise click.ClickException(str(e)) from None


@click.group("sandbox")
def sandbox() -> None:
    """The sandbox for model-written code: build its image, check the backends (docs/sandbox.md)."""


@sandbox.command("build")
@click.option(
    "--image", default=None, help="Docker image name (default: autojudge-sandbox:<recipe version>)."
)
@click.option(
    "--include",
    "packages",
    multiple=True,
    metavar="PKG",
    help="Extra Debian package for the image (repeatable), e.g. python3-numpy.",
)
@click.option(
    "--suite", default=None, help="Debian suite (default: the host's when it is Debian, else bookworm)."
)
@click.option("--mirror", default=None, help="Debian mirror (default: http://deb.debian.org/debian).")
@click.option("--docker/--no-docker", default=True, show_default=True, help="Import the Docker image.")
@click.option(
    "--rootfs/--no-rootfs",
    default=True,
    show_default=True,
    help="Unpack the root filesystem for the bubblewrap backend.",
)
@click.option("--force", is_flag=True, help="Rebuild even what exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def build_cmd(
    image: str | None,
    packages: tuple[str, ...],
    suite: str | None,
    mirror: str | None,
    docker: bool,
    rootfs: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Build the sandbox image offline: mmdebstrap + docker import (no registry, never a pull).

    Idempotent: an existing image / root filesystem is kept unless --force. Without a Docker
    daemon only the bubblewrap root filesystem is built.
    """
    from autojudge.sandbox.image import DEFAULT_IMAGE, BuildError, build

    def log(msg: str) -> None:
        click.echo(f"aj sandbox build: {msg}", err=True)

    try:
        report = build(
            image or DEFAULT_IMAGE,
            packages=packages,
            suite=suite,
            mirror=mirror,
            docker=docker,
            rootfs=rootfs,
            force=force,
            log=log,
        )
    except BuildError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"image {report.image}: {report.docker}")
    click.echo(f"bubblewrap root {report.rootfs_path}: {report.rootfs}")
    click.echo(f"packages: {', '.join(report.packages)}; {report.seconds:.1f} s")
    if docker and not rootfs and report.docker.startswith("skipped"):
        sys.exit(1)  # asked for the Docker image only, and it could not be built


@sandbox.command("check")
@click.option("--no-run", is_flag=True, help="Do not run a test program in each backend.")
@click.option("--image", default=None, help="Docker image to check (default: the built-in one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def check_cmd(no_run: bool, image: str | None, as_json: bool) -> None:
    """Report which sandbox backend is usable here, and why not.

    Exits 0 when Docker or bubblewrap works, 1 otherwise.
    """
    from autojudge.sandbox.check import check_all
    from autojudge.sandbox.image import DEFAULT_IMAGE

    out = check_all(run=not no_run, image=image or DEFAULT_IMAGE)
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        for b in out["backends"]:
            mark = "yes" if b["usable"] else "no "
            click.echo(f"{b['name']:<13} usable: {mark}  {b['reason']}")
            for k, v in b["details"].items():
                click.echo(f"{'':<15}{k}: {v}")
        auto = out["auto"]
        click.echo(
            f"auto backend: {auto}"
            if auto
            else "auto backend: none (install docker.io and run `aj sandbox build`, or install bubblewrap)"
        )
    sys.exit(0 if out["auto"] else 1)


@sandbox.command("reap")
@click.option(
    "--all", "everything", is_flag=True, help="Remove every sandbox container, also those of live processes."
)
def reap_cmd(everything: bool) -> None:
    """Remove sandbox containers left by processes that died (a new pool does this too)."""
    from autojudge.sandbox.api import SandboxUnavailable
    from autojudge.sandbox.docker_backend import connect, reap_stale

    try:
        api = connect()
    except SandboxUnavailable as e:
        raise click.ClickException(str(e)) from None
    removed = reap_stale(api, everything=everything)
    click.echo(f"removed {len(removed)} container(s)" + (f": {' '.join(removed)}" if removed else ""))


@sandbox.command("run")
@click.argument("program", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file given to the program on stdin: one test each (repeatable; none: one empty input).",
)
@click.option(
    "--expected",
    "expected",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The expected stdout of the test with the same position (LiveCodeBench comparison).",
)
@click.option("--timeout", type=float, default=6.0, show_default=True, help="Seconds per test.")
@click.option("--memory-mb", type=int, default=512, show_default=True, help="Memory limit.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@backend_options
def run_cmd(
    program: Path,
    inputs: tuple[Path, ...],
    expected: tuple[Path, ...],
    timeout: float,
    memory_mb: int,
    as_json: bool,
    backend: str,
    unsafe_local: bool,
) -> None:
    """Run a Python program on stdin tests in the sandbox and report each test.

    Exits 0 when every test with an expected output passed and the others ran without error.
    """
    from autojudge.sandbox import NO_EXPECTED, Limits, Program, TestCase

    if len(expected) > max(len(inputs), 1):
        raise click.UsageError("more --expected than --input files")
    texts = [p.read_text("utf-8") for p in inputs] or [""]
    wants = [p.read_text("utf-8") for p in expected] + [NO_EXPECTED] * (len(texts) - len(expected))
    prog = Program(
        program.read_text("utf-8"),
        [TestCase.stdio(t, w) for t, w in zip(texts, wants, strict=True)],
        id=program.name,
    )
    with open_sandbox(
        backend, unsafe_local, workers=1, limits=Limits(timeout=timeout, memory_mb=memory_mb)
    ) as box:
        res = box.run(prog)
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
    else:
        for i, r in enumerate(res.results):
            t = f"{r.time_s:.3f} s" if r.time_s is not None else "-"
            click.echo(f"test {i + 1}: {r.status} ({t}){': ' + r.reason if r.reason else ''}")
            if r.status == "ran":
                click.echo(r.stdout, nl=False)
        click.echo(f"{res.n_passed}/{len(res.results)} passed on {res.backend}")
    ok = all(r.passed or r.status == "ran" for r in res.results)
    sys.exit(0 if ok else 1)
