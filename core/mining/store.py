"""The on-disk store of mined mismatches: crash-safe, resumable, shardable, mergeable.

Layout (see ``docs/formats.md``)::

    DIR/meta.json                       run description; checked on resume and merge
    DIR/shards/shard-NNNNNN.safetensors features of prompt NNNNNN (absent when it has no labels)
    DIR/shards/shard-NNNNNN.jsonl       one row per labelled mismatch, same order
    DIR/prompts/NNNNNN.json             prompt-level result, written LAST: the completion marker
    DIR/summary.json                    statistics, rewritten by :meth:`MinedStore.write_summary`

``NNNNNN`` is the prompt's index in the task split, so shards of separate runs
(``--shard i/n``) never collide. Every file is written to a temporary name and
renamed, so a killed run leaves whole files only; on resume, shard files of a
prompt without its completion marker are deleted and the prompt is mined again:
nothing is lost and nothing is duplicated.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autojudge.core.files import atomic_save_tensors, atomic_write_bytes, atomic_write_json
from autojudge.core.mining.steps import PromptResult, stack_features

FORMAT = "autojudge-mined/1"


class MinedStoreError(ValueError):
    """A mined directory is inconsistent with the requested run, or corrupt."""


def _comparable(meta: dict[str, Any]) -> dict[str, Any]:
    """The parts of meta.json that must agree to resume or merge (run-specific fields dropped)."""
    return {k: v for k, v in meta.items() if k not in ("shard", "created", "library_version")}


class MinedStore:
    """Reads and writes one mined directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.shards = self.root / "shards"
        self.prompts = self.root / "prompts"

    # -- meta -------------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    def read_meta(self) -> dict[str, Any]:
        try:
            meta = json.loads(self.meta_path.read_text())
        except FileNotFoundError as e:
            raise MinedStoreError(f"{self.root} is not a mined directory: no meta.json") from e
        except json.JSONDecodeError as e:
            raise MinedStoreError(f"{self.meta_path} is corrupt: {e}") from e
        if meta.get("format") != FORMAT:
            raise MinedStoreError(f"{self.meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        return meta

    def open(self, meta: dict[str, Any], *, resume: bool) -> None:
        """Start a run: write meta.json, or on ``resume`` check it matches and drop orphan shard files."""
        meta = {"format": FORMAT, **meta}
        if self.meta_path.exists():
            if not resume:
                raise MinedStoreError(
                    f"{self.root} already holds mined data; pass --resume to continue it or choose another --out"
                )
            was, now = _comparable(self.read_meta()), _comparable(meta)
            if was != now:
                diff = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
                raise MinedStoreError(
                    f"cannot resume {self.root}: it was mined with different settings ({', '.join(diff)}). "
                    "Use the original settings or a new --out directory."
                )
            self.remove_orphans()
            return
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.meta_path, meta)

    # -- prompts ------------------------------------------------------------------------
    def done_indices(self) -> set[int]:
        if not self.prompts.is_dir():
            return set()
        return {int(p.stem) for p in self.prompts.glob("*.json") if p.stem.isdigit()}

    def remove_orphans(self) -> list[Path]:
        """Delete shard files of prompts without a completion marker (a crash between writes)."""
        done = self.done_indices()
        removed = []
        if self.shards.is_dir():
            for p in self.shards.iterdir():
                stem = p.name.split(".")[0]
                if p.name.startswith(".") or (stem.startswith("shard-") and int(stem[6:]) not in done):
                    p.unlink()
                    removed.append(p)
        for p in self.prompts.glob(".*") if self.prompts.is_dir() else []:
            p.unlink()
        return removed

    def write_prompt(self, result: PromptResult) -> None:
        """Write one prompt's shard (tensors, then rows) and finally its completion marker."""
        name = f"shard-{result.index:06d}"
        tensors = stack_features(result.records)
        if tensors:
            atomic_save_tensors(self.shards / f"{name}.safetensors", tensors)
            rows = "".join(json.dumps(r.row(), default=str) + "\n" for r in result.records)
            atomic_write_bytes(self.shards / f"{name}.jsonl", rows.encode())
        atomic_write_json(self.prompts / f"{result.index:06d}.json", result.summary_row())

    def prompt_rows(self) -> list[dict[str, Any]]:
        rows = []
        for p in sorted(self.prompts.glob("[0-9]*.json")):
            rows.append(json.loads(p.read_text()))
        return rows

    def label_rows(self) -> list[dict[str, Any]]:
        rows = []
        for p in sorted(self.shards.glob("shard-*.jsonl")):
            rows += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        return rows

    # -- summary ------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        prompts = self.prompt_rows()
        labels = self.label_rows()
        mined = [p for p in prompts if not p.get("skipped")]
        n_labels = len(labels)
        n_imp = sum(r["label"] for r in labels)
        fwd = sum(p["target_forwards"] for p in prompts)
        return {
            "prompts": len(prompts),
            "prompts_skipped": len(prompts) - len(mined),
            "labels": n_labels,
            "important": n_imp,
            "important_fraction": n_imp / n_labels if n_labels else 0.0,
            "mismatches_per_prompt": n_labels / len(mined) if mined else 0.0,
            "answer_agreement": 1 - n_imp / n_labels if n_labels else 0.0,
            "original_correct_fraction": (sum(bool(p["correct"]) for p in mined) / len(mined)) if mined else 0.0,
            "alternative_correct_fraction": (sum(bool(r["correct_alternative"]) for r in labels) / n_labels) if n_labels else 0.0,
            "target_forwards": fwd,
            "target_forwards_per_label": fwd / n_labels if n_labels else 0.0,
            "target_tokens": sum(p["target_tokens"] for p in prompts),
            "seconds": sum(p["seconds"] for p in prompts),
            "seconds_per_prompt": (sum(p["seconds"] for p in prompts) / len(prompts)) if prompts else 0.0,
        }

    def write_summary(self) -> dict[str, Any]:
        s = self.summary()
        atomic_write_json(self.root / "summary.json", s)
        return s


def merge_stores(sources: Iterable[str | Path], out: str | Path) -> MinedStore:
    """Merge shard directories of one run (``--shard i/n``) into ``out``; settings must agree."""
    stores = [MinedStore(s) for s in sources]
    if not stores:
        raise MinedStoreError("nothing to merge")
    metas = [s.read_meta() for s in stores]
    for s, m in zip(stores[1:], metas[1:], strict=True):
        if _comparable(m) != _comparable(metas[0]):
            raise MinedStoreError(f"cannot merge {s.root} with {stores[0].root}: different models, task or settings")
    dest = MinedStore(out)
    if dest.meta_path.exists():
        raise MinedStoreError(f"{dest.root} already exists; merge into a new directory")
    for s in stores:
        s.remove_orphans()
    seen: dict[int, Path] = {}
    for s in stores:
        for idx in s.done_indices():
            if idx in seen:
                raise MinedStoreError(f"prompt {idx} was mined in both {seen[idx]} and {s.root}: overlapping shards")
            seen[idx] = s.root
    meta = dict(metas[0])
    meta["shard"] = None
    meta["merged_from"] = [str(s.root) for s in stores]
    dest.root.mkdir(parents=True)
    atomic_write_json(dest.meta_path, meta)
    for s in stores:
        for sub in ("shards", "prompts"):
            src = s.root / sub
            if src.is_dir():
                (dest.root / sub).mkdir(exist_ok=True)
                for f in src.iterdir():
                    if not f.name.startswith("."):
                        shutil.copy2(f, dest.root / sub / f.name)
    dest.write_summary()
    return dest
