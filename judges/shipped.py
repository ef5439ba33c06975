"""Judges shipped in the package: trained artifacts for the default pair, usable by name.

A shipped judge is an ordinary judge artifact (``aj train`` output, one weight
vector per feature block) stored as ``judges/shipped/NAME.safetensors`` in the
package; ``--judge NAME`` resolves to it wherever a judge is accepted, and the
usual fingerprint check refuses it for any other model pair. :func:`shipped_judges`
lists them with what their metadata records: task, feature set, validation
ROC-AUC, calibrated threshold, labels trained on and the pair.

``AJ_SHIPPED_JUDGES`` (a directory) replaces the package's folder: for tests, or
to try a freshly trained set before it is committed.

Limits: names are file stems (letters, digits, ``-``, ``_``); a file path given to
``--judge`` always wins over a shipped name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autojudge.judges.artifact import JudgeArtifactError, read_judge_metadata

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def shipped_dir() -> Path:
    """Where shipped judges are read from (``AJ_SHIPPED_JUDGES`` or the package folder)."""
    env = os.environ.get("AJ_SHIPPED_JUDGES")
    return Path(env) if env else SHIPPED_DIR


@dataclass(frozen=True)
class ShippedJudge:
    """One shipped judge artifact and the facts its metadata records."""

    name: str
    path: Path
    task: str | None
    feature_set: str
    threshold: float
    auc: float | None
    labels: int | None
    target: str
    draft: str
    meta: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "features": self.feature_set,
            "threshold": self.threshold,
            "val_auc": self.auc,
            "labels": self.labels,
            "target": self.target,
            "draft": self.draft,
            "path": str(self.path),
        }


def describe_artifact(name: str, path: Path) -> ShippedJudge:
    """What ``path``'s metadata records (any judge artifact; ``name`` is how it is called)."""
    meta = read_judge_metadata(path)
    metrics = meta.get("metrics") or {}
    split = metrics.get("split") or {}
    auc = metrics.get("val_auc")
    labels = (split.get("n_train") or 0) + (split.get("n_val") or 0) or None
    return ShippedJudge(
        name=name,
        path=path,
        task=meta.get("task"),
        feature_set=str(meta.get("feature_set")),
        threshold=float(meta["threshold"]),
        auc=None if auc is None else float(auc),
        labels=None if labels is None else int(labels),
        target=str((meta.get("target") or {}).get("id", "?")),
        draft=str((meta.get("draft") or {}).get("id", "?")),
        meta=meta,
    )


def shipped_judges(directory: Path | None = None) -> list[ShippedJudge]:
    """Every shipped judge, by name; an unreadable artifact raises :class:`JudgeArtifactError`."""
    root = directory or shipped_dir()
    if not root.is_dir():
        return []
    return [describe_artifact(p.stem, p) for p in sorted(root.glob("*.safetensors")) if _NAME.match(p.stem)]


def find_shipped(name: str) -> ShippedJudge | None:
    """The shipped judge called ``name``, or None."""
    if not _NAME.match(name):
        return None
    path = shipped_dir() / f"{name}.safetensors"
    return describe_artifact(name, path) if path.is_file() else None


def shipped_names() -> list[str]:
    root = shipped_dir()
    return sorted(p.stem for p in root.glob("*.safetensors")) if root.is_dir() else []


__all__ = [
    "JudgeArtifactError",
    "ShippedJudge",
    "find_shipped",
    "shipped_dir",
    "shipped_judges",
    "shipped_names",
]
