"""The judge artifact: round trip, and a clear JudgeArtifactError for every kind of damage or mismatch."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from judges_synthetic import DRAFT, TARGET
from safetensors.torch import load_file, save_file

from autojudge.core import __version__
from autojudge.core.judge import LinearJudge
from autojudge.judges.artifact import (
    ARTIFACT_FORMAT,
    CHECKSUM_KEY,
    METADATA_KEY,
    JudgeArtifactError,
    load_judge,
    read_judge_metadata,
    save_judge,
)

H_T, H_D = TARGET["hidden_size"], DRAFT["hidden_size"]


def _weights(blocks=("dd", "dt", "x"), seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dims = {"dd": H_D, "dt": H_T, "x": 3}
    return {b: rng.standard_normal(dims[b]).astype(np.float32) for b in blocks}


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return save_judge(
        tmp_path / "judge.safetensors",
        _weights(),
        -0.25,
        ("dd", "dt", "x"),
        threshold=0.2,
        draft=DRAFT,
        target=TARGET,
        task="toy",
        extra={"threshold_table": [{"threshold": 0.2, "recall": 0.9, "precision": float("nan")}]},
    )


def _fp(rec: dict) -> dict:
    return {k: rec[k] for k in ("config_sha256", "vocab_sha256", "hidden_size")}


def _header_len(path: Path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def _rewrite_meta(src: Path, dst: Path, edit) -> Path:
    """Re-save ``src`` with its metadata document changed by ``edit(doc)`` (checksum not fixed)."""
    doc = read_judge_metadata(src)
    edit(doc)
    save_file(load_file(str(src)), str(dst), metadata={METADATA_KEY: json.dumps(doc)})
    return dst


def test_round_trip(artifact: Path) -> None:
    judge, meta = load_judge(artifact, target_fingerprint=_fp(TARGET), draft_fingerprint=_fp(DRAFT))
    assert isinstance(judge, LinearJudge)
    assert judge.blocks == ("dd", "dt", "x") and judge.needs_draft_hidden
    assert judge.threshold == pytest.approx(0.2) and judge.bias == pytest.approx(-0.25)
    for b, w in _weights().items():
        assert torch.equal(judge.weights[b], torch.from_numpy(w))
        assert judge.weights[b].device.type == "cpu"
    assert meta["format"] == ARTIFACT_FORMAT and meta["library_version"] == __version__
    assert meta["draft"] == DRAFT and meta["target"] == TARGET and meta["task"] == "toy"
    assert meta["block_dims"] == {"dd": H_D, "dt": H_T, "x": 3}
    assert meta["threshold_table"][0]["precision"] is None  # NaN stored as null: strict JSON


def test_threshold_override(artifact: Path) -> None:
    assert load_judge(artifact, threshold=0.0)[0].threshold == 0.0
    with pytest.raises(ValueError):
        load_judge(artifact, threshold=1.5)


def test_no_pickle_in_file(artifact: Path) -> None:
    raw = artifact.read_bytes()
    assert b"\x80\x04" not in raw[:2] and b"torch._utils" not in raw and raw[8:9] == b"{"


@pytest.mark.parametrize("keep", [0, 5, 8, 100, -1, -4])
def test_truncated(artifact: Path, tmp_path: Path, keep: int) -> None:
    raw = artifact.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw[:keep] if keep >= 0 else raw[: len(raw) + keep])
    with pytest.raises(JudgeArtifactError, match="bad.safetensors"):
        load_judge(bad)


def test_trailing_garbage(artifact: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(artifact.read_bytes() + b"\0" * 8)
    with pytest.raises(JudgeArtifactError):
        load_judge(bad)


def test_flipped_bytes_in_header_always_detected(artifact: Path, tmp_path: Path) -> None:
    raw = artifact.read_bytes()
    n = _header_len(artifact)
    bad = tmp_path / "bad.safetensors"
    for pos in range(0, 8 + n, 3):
        b = bytearray(raw)
        b[pos] ^= 0x01
        bad.write_bytes(bytes(b))
        with pytest.raises(JudgeArtifactError):
            load_judge(bad)


def test_flipped_bytes_in_tensor_data(artifact: Path, tmp_path: Path) -> None:
    raw = bytearray(artifact.read_bytes())
    raw[8 + _header_len(artifact) + 5] ^= 0x10
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(JudgeArtifactError, match="checksum"):
        load_judge(bad)


@pytest.mark.parametrize("key", ["config_sha256", "vocab_sha256", "hidden_size"])
@pytest.mark.parametrize("role", ["target", "draft"])
def test_wrong_fingerprint(artifact: Path, key: str, role: str) -> None:
    fp = _fp(TARGET if role == "target" else DRAFT)
    fp[key] = fp[key] + 1 if key == "hidden_size" else "0" * 64
    with pytest.raises(JudgeArtifactError, match=f"{role} model mismatch on {key}"):
        load_judge(artifact, **{f"{role}_fingerprint": fp})


def test_fingerprint_partial_and_empty(artifact: Path) -> None:
    load_judge(artifact, target_fingerprint={"vocab_sha256": TARGET["vocab_sha256"], "id": "ignored"})
    with pytest.raises(ValueError):
        load_judge(artifact, target_fingerprint={"id": "x"})


def test_wrong_hidden_size_in_weights(tmp_path: Path) -> None:
    w = _weights(("dt",))
    w["dt"] = np.zeros(H_T + 1, np.float32)
    with pytest.raises(ValueError, match="model records"):
        save_judge(tmp_path / "j.safetensors", w, 0.0, ("dt",), threshold=0.5, draft=DRAFT, target=TARGET)
    # and a file made by hand with consistent block_dims but the wrong model hidden size
    good = save_judge(
        tmp_path / "j.safetensors", _weights(("dt",)), 0.0, ("dt",), threshold=0.5, draft=DRAFT, target=TARGET
    )
    doc = read_judge_metadata(good)
    doc["block_dims"]["dt"] = H_T + 1
    save_file(
        {"weight.dt": torch.zeros(H_T + 1)},
        str(tmp_path / "bad.safetensors"),
        metadata={METADATA_KEY: json.dumps(doc)},
    )
    with pytest.raises(JudgeArtifactError, match="hidden size"):
        load_judge(tmp_path / "bad.safetensors")


def test_missing_block(artifact: Path, tmp_path: Path) -> None:
    tensors = load_file(str(artifact))
    del tensors["weight.dd"]
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={METADATA_KEY: json.dumps(read_judge_metadata(artifact))})
    with pytest.raises(JudgeArtifactError, match=r"missing \['weight.dd'\]"):
        load_judge(bad)


def test_unexpected_tensor(artifact: Path, tmp_path: Path) -> None:
    tensors = load_file(str(artifact))
    tensors["weight.tt"] = torch.zeros(3)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={METADATA_KEY: json.dumps(read_judge_metadata(artifact))})
    with pytest.raises(JudgeArtifactError, match="unexpected"):
        load_judge(bad)


def test_wrong_dtype(artifact: Path, tmp_path: Path) -> None:
    tensors = {k: v.double() for k, v in load_file(str(artifact)).items()}
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={METADATA_KEY: json.dumps(read_judge_metadata(artifact))})
    with pytest.raises(JudgeArtifactError, match="float32"):
        load_judge(bad)


def test_format_version(artifact: Path, tmp_path: Path) -> None:
    bad = _rewrite_meta(
        artifact, tmp_path / "bad.safetensors", lambda d: d.update(format="autojudge-judge/2")
    )
    with pytest.raises(JudgeArtifactError, match="unsupported judge format"):
        load_judge(bad)


def test_edited_metadata_breaks_checksum(artifact: Path, tmp_path: Path) -> None:
    bad = _rewrite_meta(artifact, tmp_path / "bad.safetensors", lambda d: d.update(bias=3.0))
    with pytest.raises(JudgeArtifactError, match="checksum"):
        load_judge(bad)
    bad = _rewrite_meta(artifact, tmp_path / "bad2.safetensors", lambda d: d.pop(CHECKSUM_KEY))
    with pytest.raises(JudgeArtifactError, match="checksum"):
        load_judge(bad)


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(JudgeArtifactError, match="no such"):
        load_judge(tmp_path / "nope.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"weight.dt": torch.zeros(H_T)}, str(plain))
    with pytest.raises(JudgeArtifactError, match="not an autojudge judge artifact"):
        load_judge(plain)
    text = tmp_path / "text.safetensors"
    text.write_text("hello world, this is not safetensors")
    with pytest.raises(JudgeArtifactError):
        load_judge(text)


def test_save_refuses_bad_inputs(tmp_path: Path) -> None:
    kw = {"threshold": 0.5, "draft": DRAFT, "target": TARGET}
    with pytest.raises(ValueError):
        save_judge(tmp_path / "a.safetensors", _weights(("dt",)), 0.0, ("dt", "x"), **kw)
    with pytest.raises(ValueError):
        save_judge(tmp_path / "a.safetensors", _weights(("dt",)), float("nan"), ("dt",), **kw)
    with pytest.raises(ValueError):
        save_judge(tmp_path / "a.safetensors", _weights(("dt",)), 0.0, ("dt",), **{**kw, "threshold": 2.0})
    assert not (tmp_path / "a.safetensors").exists()


def test_no_pickle_in_sources() -> None:
    import autojudge.judges as pkg

    for src in Path(pkg.__path__[0]).glob("*.py"):
        text = src.read_text()
        assert "import pickle" not in text and "joblib" not in text and "torch.load" not in text, src
