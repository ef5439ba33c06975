"""The judge artifact: one safetensors file, no pickle, checked thoroughly at load.

Layout (``docs/formats.md`` "Judge artifact", ``docs/judges.md``):

* tensors ``weight.<block>``: 1-D float32, standardisation folded in, one per
  feature block, in any order (the metadata's ``blocks`` fixes the order);
* header ``__metadata__["autojudge"]``: a JSON document with ``format``
  (:data:`ARTIFACT_FORMAT`), ``feature_set``, ``blocks``, ``block_dims``,
  ``extras``, ``bias``, ``threshold``, ``checksum_sha256``, the ``draft`` and
  ``target`` model records (``id``, ``config_sha256``, ``vocab_sha256``,
  ``hidden_size``; copied from the mined ``meta.json``), ``task``,
  ``threshold_table``, ``metrics``, ``training``, ``library_version``.

:func:`load_judge` raises :class:`JudgeArtifactError` for a missing, truncated or
corrupt file, an unsupported format version, tensors that disagree with the
metadata, a checksum (over metadata and weights) that does not match, and model fingerprints that
differ from the models the caller runs.

Limits: only the models' *records* are compared (config and vocabulary hashes,
hidden size); a judge trained on other mined data of the same models loads fine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autojudge.core import __version__
from autojudge.core.fingerprint import FINGERPRINT_KEYS
from autojudge.core.judge import EXTRAS, FEATURE_BLOCKS, LinearJudge

ARTIFACT_FORMAT = "autojudge-judge/1"
METADATA_KEY = "autojudge"
_MAX_HEADER = 64 * 1024 * 1024


class JudgeArtifactError(ValueError):
    """A judge artifact cannot be used: corrupt, wrong version, or made for other models."""


def jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays and non-finite floats (-> ``None``) for strict JSON."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


CHECKSUM_KEY = "checksum_sha256"


def artifact_checksum(
    doc: Mapping[str, Any], weights: Mapping[str, torch.Tensor], blocks: Sequence[str]
) -> str:
    """sha256 of the canonical JSON of ``doc`` (minus :data:`CHECKSUM_KEY`) followed by the weights.

    Weights are hashed as little-endian float32 bytes in ``blocks`` order. Any change
    to the metadata (bias, threshold, fingerprints, ...) or to the tensor data breaks it.
    """
    body = {k: v for k, v in doc.items() if k != CHECKSUM_KEY}
    h = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())
    for b in blocks:
        arr = weights[b].detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False)
        h.update(b"\0" + b.encode() + b"\0")
        h.update(arr.tobytes())
    return h.hexdigest()


def _block_dims_expected(meta: Mapping[str, Any]) -> dict[str, int | None]:
    def hs(role: str) -> int | None:
        rec = meta.get(role)
        return rec.get("hidden_size") if isinstance(rec, Mapping) else None

    return {"dt": hs("target"), "dd": hs("draft"), "x": len(EXTRAS)}


def _as_vector(w: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(w, torch.Tensor):
        return w.detach().to("cpu", torch.float32).reshape(-1).contiguous()
    return torch.from_numpy(np.ascontiguousarray(np.asarray(w, dtype=np.float32).reshape(-1)))


def save_judge(
    path: str | Path,
    weights: Mapping[str, torch.Tensor | np.ndarray],
    bias: float,
    blocks: Sequence[str],
    *,
    threshold: float,
    draft: Mapping[str, Any],
    target: Mapping[str, Any],
    task: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a judge artifact atomically (temporary file + rename) and return its path.

    ``weights[b]`` are the *folded* per-block weights; ``draft``/``target`` are the
    model records of the mined ``meta.json``. ``extra`` adds metadata keys
    (``threshold_table``, ``metrics``, ``training``, ...); it cannot override
    the keys this function sets.
    """
    blocks = tuple(blocks)
    if set(weights) != set(blocks):
        raise ValueError(f"weights for {sorted(weights)} do not match feature blocks {list(blocks)}")
    tensors = {b: _as_vector(weights[b]) for b in blocks}
    # Validate exactly as the loader would, so an artifact that cannot load is never written.
    LinearJudge(tensors, bias, threshold, blocks)
    if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise ValueError("weights hold NaN or inf")
    if not (math.isfinite(bias) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"bias must be finite and threshold in [0, 1]; got {bias}, {threshold}")
    doc: dict[str, Any] = dict(jsonable(extra or {}))
    doc.update(
        {
            "format": ARTIFACT_FORMAT,
            "feature_set": "+".join(blocks),
            "blocks": list(blocks),
            "block_dims": {b: int(tensors[b].numel()) for b in blocks},
            "extras": list(EXTRAS),
            "bias": float(bias),
            "threshold": float(threshold),
            "draft": jsonable(dict(draft)),
            "target": jsonable(dict(target)),
            "task": task,
            "library_version": __version__,
            "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    doc = jsonable(doc)
    doc[CHECKSUM_KEY] = artifact_checksum(doc, tensors, blocks)
    expected = _block_dims_expected(doc)
    for b in blocks:
        if expected[b] is not None and expected[b] != doc["block_dims"][b]:
            raise ValueError(
                f"weight.{b} has {doc['block_dims'][b]} entries but the model records say {expected[b]}"
            )
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {f"weight.{b}": t for b, t in tensors.items()},
        str(tmp),
        metadata={METADATA_KEY: json.dumps(doc, allow_nan=False, sort_keys=True)},
    )
    os.replace(tmp, path)
    return path


def _fail(path: Path, msg: str) -> JudgeArtifactError:
    return JudgeArtifactError(f"{path}: {msg}")


def _read_header(path: Path) -> dict[str, Any]:
    """Parse and sanity-check the safetensors header ourselves, for clear messages."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _fail(path, f"truncated: {size} bytes, not a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise _fail(path, f"truncated or corrupt: header claims {n} bytes, file has {size}")
            raw = f.read(n)
    except OSError as e:
        raise _fail(path, f"cannot read ({e})") from e
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"corrupt header ({e})") from e
    if not isinstance(header, dict):
        raise _fail(path, "corrupt header (not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            lo, hi = info["data_offsets"]
            end = max(end, int(hi))
        except (TypeError, KeyError, ValueError) as e:
            raise _fail(path, f"corrupt header entry for {name!r}") from e
    if 8 + n + end != size:
        raise _fail(path, f"truncated or corrupt: tensors need {8 + n + end} bytes, file has {size}")
    return header


def _check_fingerprint(path: Path, role: str, recorded: Any, given: Mapping[str, Any]) -> None:
    if not isinstance(given, Mapping):
        raise TypeError(f"{role}_fingerprint must be a dict with keys {FINGERPRINT_KEYS}")
    keys = [k for k in FINGERPRINT_KEYS if given.get(k) is not None]
    if not keys:
        raise ValueError(f"{role}_fingerprint has none of the keys {FINGERPRINT_KEYS}")
    if not isinstance(recorded, Mapping):
        raise _fail(path, f"the artifact records no {role} model; cannot verify its fingerprint")
    for k in keys:
        if recorded.get(k) is None:
            raise _fail(path, f"the artifact does not record {role}.{k}; cannot verify it")
        if recorded[k] != given[k]:
            rid = recorded.get("id", "?")
            raise _fail(
                path,
                f"{role} model mismatch on {k}: the judge was trained for {rid!r} with {k}={recorded[k]!r}, "
                f"the running model has {given[k]!r}. Retrain the judge (aj mine + aj train) for these models",
            )


def read_judge_metadata(path: str | Path) -> dict[str, Any]:
    """The artifact's metadata document, after the header and format-version checks only."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such judge artifact")
    header = _read_header(path)
    md = header.get("__metadata__")
    if not isinstance(md, dict) or METADATA_KEY not in md:
        raise _fail(path, f"not an autojudge judge artifact (no {METADATA_KEY!r} metadata)")
    try:
        doc = json.loads(md[METADATA_KEY])
    except (TypeError, json.JSONDecodeError) as e:
        raise _fail(path, f"corrupt metadata JSON ({e})") from e
    if not isinstance(doc, dict):
        raise _fail(path, "corrupt metadata (not a JSON object)")
    fmt = doc.get("format")
    if fmt != ARTIFACT_FORMAT:
        raise _fail(
            path,
            f"unsupported judge format {fmt!r}; this library (autojudge {__version__}) reads {ARTIFACT_FORMAT!r}",
        )
    return doc


def load_judge(
    path: str | Path,
    *,
    target_fingerprint: Mapping[str, Any] | None = None,
    draft_fingerprint: Mapping[str, Any] | None = None,
    threshold: float | None = None,
    device: str | torch.device = "cpu",
) -> tuple[LinearJudge, dict[str, Any]]:
    """Load a judge artifact as a :class:`LinearJudge` on ``device`` plus its metadata.

    Fingerprints are dicts with any of ``config_sha256``, ``vocab_sha256``,
    ``hidden_size`` (see :func:`model_fingerprint`); each key given must equal the
    artifact's record. ``threshold`` overrides the stored one (must be in [0, 1]).
    Every failure is a :class:`JudgeArtifactError` naming the file and the problem.
    """
    path = Path(path)
    doc = read_judge_metadata(path)
    blocks = doc.get("blocks")
    if (
        not isinstance(blocks, list)
        or not blocks
        or any(b not in FEATURE_BLOCKS for b in blocks)
        or len(set(blocks)) != len(blocks)
    ):
        raise _fail(path, f"bad feature blocks {blocks!r}; known: {list(FEATURE_BLOCKS)}")
    if "x" in blocks and doc.get("extras") != list(EXTRAS):
        raise _fail(path, f"extras {doc.get('extras')!r} differ from this library's {list(EXTRAS)}")
    dims = doc.get("block_dims") or {}
    expected = _block_dims_expected(doc)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = set(f.keys())
            want = {f"weight.{b}" for b in blocks}
            if names != want:
                missing, extra = sorted(want - names), sorted(names - want)
                raise _fail(
                    path, f"tensors do not match the feature blocks: missing {missing}, unexpected {extra}"
                )
            weights = {b: f.get_tensor(f"weight.{b}") for b in blocks}
    except JudgeArtifactError:
        raise
    except Exception as e:  # safetensors' own errors for corrupt files
        raise _fail(path, f"corrupt safetensors data ({e})") from e
    for b in blocks:
        w = weights[b]
        if w.dtype != torch.float32 or w.dim() != 1:
            raise _fail(path, f"weight.{b} must be 1-D float32, got {w.dtype} {list(w.shape)}")
        if dims.get(b) != w.numel():
            raise _fail(path, f"weight.{b} has {w.numel()} entries, metadata block_dims says {dims.get(b)!r}")
        if expected[b] is not None and expected[b] != w.numel():
            raise _fail(
                path, f"weight.{b} has {w.numel()} entries but the model's hidden size is {expected[b]}"
            )
        if not torch.isfinite(w).all():
            raise _fail(path, f"weight.{b} holds NaN or inf")
    try:
        checksum = artifact_checksum(doc, weights, blocks)
    except ValueError as e:  # non-finite numbers in the metadata
        raise _fail(path, f"corrupt metadata ({e})") from e
    if doc.get(CHECKSUM_KEY) != checksum:
        raise _fail(path, "checksum mismatch: the metadata or the tensor data was altered or is corrupt")
    bias = doc.get("bias")
    if not isinstance(bias, (int, float)) or not math.isfinite(bias):
        raise _fail(path, f"bad bias {bias!r}")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    thr = doc.get("threshold") if threshold is None else threshold
    if not isinstance(thr, (int, float)) or not 0.0 <= float(thr) <= 1.0:
        raise _fail(path, f"stored threshold {thr!r} is not a number in [0, 1]")
    if target_fingerprint is not None:
        _check_fingerprint(path, "target", doc.get("target"), target_fingerprint)
    if draft_fingerprint is not None:
        _check_fingerprint(path, "draft", doc.get("draft"), draft_fingerprint)
    judge = LinearJudge(weights, float(bias), float(thr), tuple(blocks)).to(device)
    return judge, doc
