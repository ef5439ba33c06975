"""The mined-data format: the one module that writes it and reads it back.

Layout (documented in ``docs/formats.md``; nothing else knows it)::

    DIR/meta.json                       run description (MINED_FORMAT); checked on resume, merge and read
    DIR/shards/shard-NNNNNN.safetensors features of prompt NNNNNN (absent when it has no labels)
    DIR/shards/shard-NNNNNN.jsonl       one row per labelled mismatch, same order
    DIR/prompts/NNNNNN.json             prompt-level result, written LAST: the completion marker
    DIR/summary.json                    statistics, rewritten by :meth:`MinedStore.write_summary`
    DIR/partial/NNNNNN.{safetensors,json}  an UNFINISHED prompt's labels so far and where its search
                                        stands (:class:`PartialJournal`); deleted when it finishes

``NNNNNN`` is the prompt's index in the task split, so shards of separate runs
(``--shard i/n``) never collide. Every file is written to a temporary name and
renamed, so a killed run leaves whole files only.

**Finished** (one rule for the writer and the reader, :meth:`MinedStore.done_indices`):
prompt ``NNNNNN`` is finished when ``prompts/NNNNNN.json`` exists. Its shard files
are written before it (tensors, then rows), so shard files of an unfinished prompt
are an interrupted write: the writer deletes them on resume and mines the prompt
again (nothing is lost, nothing duplicated); the reader refuses them, or skips them
with ``skip_incomplete=True`` (a directory a running ``aj mine`` is writing). A
finished prompt whose shard lacks one of its two files is damaged: always an error.

**Unfinished** prompts keep their progress in ``partial/`` (rewritten after every label: tensors,
then the JSON that names how many rows are valid), so ``--resume`` continues a prompt from its
latest label instead of from scratch. Readers ignore ``partial/`` unless asked
(``include_unfinished``: each of those labels is final); ``summary.json`` counts the labels
waiting there (``labels_unfinished``).

Reading (:func:`read_mined`, :meth:`MinedStore.read_arrays`) validates everything
against ``meta.json`` and returns plain numpy arrays (:class:`MinedArrays`).
Limits: everything requested is loaded into memory (float32; 50k rows of
``dd+dt+x`` for the Qwen 0.5B/1.5B pair is ~0.5 GB; only the blocks asked for are
read). Gaps in the numbering are not errors (sharded runs and skipped prompts).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autojudge.core.files import atomic_save_tensors, atomic_write_bytes, atomic_write_json
from autojudge.core.judge import EXTRAS

if TYPE_CHECKING:  # the miner (transformers) is imported only to write: reading stays light
    from autojudge.core.mining.steps import PromptProgress, PromptResult

#: ``meta.json``'s ``format``: the only version this library writes and reads.
MINED_FORMAT = "autojudge-mined/1"
#: The float32 feature tensors of a shard (``label`` and the optional ``draft_rank`` aside).
FLOAT_BLOCKS: tuple[str, ...] = ("dt", "tt", "dd", "x")
_SHARD_RE = re.compile(r"^shard-(\d{6,})\.(safetensors|jsonl)$")


class MinedDataError(ValueError):
    """A mined directory is missing, malformed, corrupt, or inconsistent with the requested run."""


def _comparable(meta: dict[str, Any]) -> dict[str, Any]:
    """The parts of meta.json that must agree to resume or merge (run-specific fields dropped)."""
    return {k: v for k, v in meta.items() if k not in ("shard", "created", "library_version")}


def feature_dims(meta: dict[str, Any], where: str | Path = "meta.json") -> dict[str, int]:
    """Width of each of :data:`FLOAT_BLOCKS` from ``meta.json``'s model records (validated)."""
    for role in ("draft", "target"):
        rec = meta.get(role)
        if not isinstance(rec, dict):
            raise MinedDataError(f"{where}: missing the {role!r} model record")
        hs = rec.get("hidden_size")
        if not isinstance(hs, int) or isinstance(hs, bool) or hs <= 0:
            raise MinedDataError(f"{where}: {role}.hidden_size must be a positive integer, got {hs!r}")
    h_target, h_draft = meta["target"]["hidden_size"], meta["draft"]["hidden_size"]
    return {"dt": h_target, "tt": h_target, "dd": h_draft, "x": len(EXTRAS)}


@dataclass
class MinedArrays:
    """Labelled mismatches of a mined directory, in shard (= prompt index) order.

    ``features[b]`` is ``[N, dim_b]`` float32 for each loaded block; ``labels`` is
    ``[N]`` int8 (1 = important); ``prompt_ids`` ``[N]`` (str) groups rows by prompt;
    ``positions`` ``[N]`` int64 (``-1`` when a row has none); ``draft_rank`` is the
    optional ``[N]`` int32 rank of the draft token in the target's logits (``None``
    when a shard lacks it); ``shards`` the shard names read; ``truncated`` ``[N]`` bool
    marks rows whose rollout hit its token budget (False for rows mined before the flag existed);
    ``harmful`` ``[N]`` bool marks swaps that turned a correct original answer into a wrong one
    (``correct_original`` true, ``correct_alternative`` false; ``None`` when a row lacks either, e.g.
    a task without reference answers): the mismatches that cost accuracy.
    """

    meta: dict[str, Any]
    features: dict[str, np.ndarray]
    labels: np.ndarray
    prompt_ids: np.ndarray
    positions: np.ndarray
    draft_rank: np.ndarray | None = None
    shards: list[str] = field(default_factory=list)
    truncated: np.ndarray | None = None
    harmful: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    def without_truncated(self) -> tuple[MinedArrays, int]:
        """These arrays minus the truncated rows, and how many were dropped."""
        if self.truncated is None or not self.truncated.any():
            return self, 0
        keep = ~self.truncated
        out = copy.copy(self)
        out.features = {b: v[keep] for b, v in self.features.items()}
        out.labels, out.prompt_ids, out.positions = (
            self.labels[keep],
            self.prompt_ids[keep],
            self.positions[keep],
        )
        out.draft_rank = None if self.draft_rank is None else self.draft_rank[keep]
        out.truncated = self.truncated[keep]
        out.harmful = None if self.harmful is None else self.harmful[keep]
        return out, int((~keep).sum())


def _harmful(row: dict[str, Any]) -> bool | None:
    """Whether a row's swap made a correct answer wrong; ``None`` when its correctness is not recorded."""
    before, after = row.get("correct_original"), row.get("correct_alternative")
    if before is None or after is None:
        return None
    return bool(before) and not bool(after)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of one ``.jsonl``; each needs at least ``prompt_id`` and ``label``."""
    rows = []
    try:
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MinedDataError(f"{path}:{i}: bad JSON ({e})") from e
                if not isinstance(row, dict) or "prompt_id" not in row or "label" not in row:
                    raise MinedDataError(f"{path}:{i}: a row needs at least 'prompt_id' and 'label'")
                rows.append(row)
    except (OSError, UnicodeDecodeError) as e:
        raise MinedDataError(f"{path}: unreadable ({e})") from e
    return rows


class MinedStore:
    """Writes (:meth:`open`, :meth:`write_prompt`) and reads (:meth:`read_arrays`) one mined directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.shards = self.root / "shards"
        self.prompts = self.root / "prompts"
        self.partial = self.root / "partial"

    # -- meta -------------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    def read_meta(self) -> dict[str, Any]:
        """Read ``meta.json`` and check it is a JSON object of this library's format."""
        if not self.root.is_dir():
            raise MinedDataError(f"{self.root}: not a directory (expected the output of `aj mine --out DIR`)")
        if not self.meta_path.is_file():
            raise MinedDataError(f"{self.meta_path}: missing; is {self.root} a mined directory?")
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MinedDataError(f"{self.meta_path}: unreadable JSON ({e})") from e
        if not isinstance(meta, dict):
            raise MinedDataError(f"{self.meta_path}: expected a JSON object")
        fmt = meta.get("format")
        if fmt != MINED_FORMAT:
            raise MinedDataError(
                f"{self.meta_path}: format {fmt!r} is not supported; this library reads {MINED_FORMAT!r}"
            )
        return meta

    def open(self, meta: dict[str, Any], *, resume: bool) -> None:
        """Start a run: write meta.json, or on ``resume`` check it matches and drop orphan shard files."""
        meta = {"format": MINED_FORMAT, **meta}
        if self.meta_path.exists():
            if not resume:
                raise MinedDataError(
                    f"{self.root} already holds mined data; pass --resume to continue it or choose another --out"
                )
            was, now = _comparable(self.read_meta()), _comparable(meta)
            if was != now:
                diff = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
                raise MinedDataError(
                    f"cannot resume {self.root}: it was mined with different settings ({', '.join(diff)}). "
                    "Use the original settings or a new --out directory."
                )
            self.remove_orphans()
            return
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.meta_path, meta)

    # -- finished prompts: the one rule ---------------------------------------------------
    def marker_path(self, index: int) -> Path:
        """Prompt ``index``'s completion marker (its summary row)."""
        return self.prompts / f"{index:06d}.json"

    def _markers(self) -> dict[int, Path]:
        if not self.prompts.is_dir():
            return {}
        return {int(p.stem): p for p in self.prompts.glob("*.json") if p.stem.isdigit()}

    def done_indices(self) -> set[int]:
        """Indices of the finished prompts: those whose completion marker exists."""
        return set(self._markers())

    def _shard_files(self) -> dict[int, dict[str, Path]]:
        """``{index: {"safetensors": path, "jsonl": path}}`` of the shard files present (either may lack)."""
        found: dict[int, dict[str, Path]] = {}
        if self.shards.is_dir():
            for p in self.shards.iterdir():
                m = _SHARD_RE.match(p.name)
                if m:
                    found.setdefault(int(m.group(1)), {})[m.group(2)] = p
        return found

    def remove_orphans(self) -> list[Path]:
        """Delete shard files of unfinished prompts (a crash between writes) and temporary files."""
        done = self.done_indices()
        removed = []
        if self.shards.is_dir():
            for p in self.shards.iterdir():
                m = _SHARD_RE.match(p.name)
                if p.name.startswith(".") or (m and int(m.group(1)) not in done):
                    p.unlink()
                    removed.append(p)
        for p in self.prompts.glob(".*") if self.prompts.is_dir() else []:
            p.unlink()
        for p in self.partial.iterdir() if self.partial.is_dir() else []:
            stem = p.name.split(".")[0]
            if p.name.startswith(".") or (stem.isdigit() and int(stem) in done):
                p.unlink()  # temporary files, and progress of prompts that finished after it was saved
                removed.append(p)
        return removed

    def journal(self) -> PartialJournal:
        """The journal of this directory's unfinished prompts (see :class:`PartialJournal`)."""
        return PartialJournal(self.partial)

    # -- writing ------------------------------------------------------------------------
    def write_prompt(self, result: PromptResult) -> None:
        """Write one prompt's shard (tensors, then rows) and finally its completion marker."""
        from autojudge.core.mining.steps import stack_features

        name = f"shard-{result.index:06d}"
        tensors = stack_features(result.records)
        if tensors:
            atomic_save_tensors(self.shards / f"{name}.safetensors", tensors)
            rows = "".join(json.dumps(r.row(), default=str) + "\n" for r in result.records)
            atomic_write_bytes(self.shards / f"{name}.jsonl", rows.encode())
        atomic_write_json(self.marker_path(result.index), result.summary_row())
        self.journal().discard(result.index)

    # -- reading ------------------------------------------------------------------------
    def prompt_rows(self) -> list[dict[str, Any]]:
        """The finished prompts' summary rows, by index."""
        return [json.loads(p.read_text(encoding="utf-8")) for _, p in sorted(self._markers().items())]

    def label_rows(self) -> list[dict[str, Any]]:
        """The ``.jsonl`` rows of the finished prompts, by index (orphan shards ignored)."""
        done = self.done_indices()
        rows = []
        for idx, files in sorted(self._shard_files().items()):
            if idx in done and "jsonl" in files:
                rows += _read_rows(files["jsonl"])
        return rows

    def complete_shards(self, *, skip_incomplete: bool = False) -> list[Path]:
        """Stems (``shards/shard-NNNNNN``, no suffix) of the finished prompts' shards, by index.

        Shard files of an unfinished prompt are an error unless ``skip_incomplete``;
        a finished prompt's shard missing one of its files is always an error.
        """
        if not self.shards.is_dir():
            raise MinedDataError(f"{self.shards}: missing; the mined directory holds no shards")
        done = self.done_indices()
        stems = []
        for idx, files in sorted(self._shard_files().items()):
            stem = self.shards / f"shard-{idx:06d}"
            if idx not in done:
                if skip_incomplete:
                    continue
                raise MinedDataError(
                    f"{stem}: the shard was not finished (no completion marker {self.marker_path(idx)}; "
                    "interrupted mining, or `aj mine` still running?). Resume mining, delete the shard, "
                    "or pass skip_incomplete=True"
                )
            if "safetensors" not in files:
                raise MinedDataError(f"{stem}.safetensors: missing (its .jsonl exists); the shard is damaged")
            if "jsonl" not in files:
                raise MinedDataError(f"{stem}.jsonl: missing (its .safetensors exists); the shard is damaged")
            stems.append(stem)
        if not stems:
            raise MinedDataError(f"{self.shards}: no complete shards")
        return stems

    def read_shard(
        self, stem: Path, blocks: Sequence[str], dims: dict[str, int]
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None, list[dict[str, Any]]]:
        """``(features, label int8, draft_rank int32 or None, rows)`` of one shard, validated."""
        path = stem.with_suffix(".safetensors")
        feats, label, rank = _read_tensors(path, blocks)
        return _validated(path, stem, feats, label, rank, _read_rows(stem.with_suffix(".jsonl")), dims)

    def read_unfinished(
        self, blocks: Sequence[str], dims: dict[str, int]
    ) -> list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None, list[dict[str, Any]]]]:
        """The labels of unfinished prompts (``partial/``), validated like shards, by index.

        A progress file may hold one tensor row more than its JSON counts (a kill between the two
        writes): the extra row is ignored. Files of prompts that have finished since are skipped
        (their labels are in the shard).
        """
        out = []
        for state_path, rows in self._unfinished_rows(strict=True):
            if not rows:
                continue
            path = state_path.with_suffix(".safetensors")
            feats, label, rank = _read_tensors(path, blocks)
            n = len(rows)
            feats, label, rank = (
                {b: x[:n] for b, x in feats.items()},
                label[:n],
                None if rank is None else rank[:n],
            )
            out.append(_validated(path, state_path, feats, label, rank, rows, dims))
        return out

    def _unfinished_rows(self, *, strict: bool) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
        """``(progress file, label rows)`` of each unfinished prompt with saved progress, by index.

        Files of prompts that have finished since (their labels are in the shard) are skipped; an
        unreadable file raises :class:`MinedDataError` when ``strict``, else is skipped.
        """
        done = self.done_indices()
        for state_path in sorted(self.partial.glob("[0-9]*.json")) if self.partial.is_dir() else []:
            if not state_path.stem.isdigit() or int(state_path.stem) in done:
                continue
            try:
                rows = json.loads(state_path.read_text(encoding="utf-8"))["rows"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                if strict:
                    raise MinedDataError(f"{state_path}: unreadable progress file ({e})") from e
                continue
            yield state_path, rows

    def unfinished_counts(self) -> dict[str, int]:
        """``prompts_unfinished`` (with saved progress), ``labels_unfinished`` (labels decided in them)
        and ``important_unfinished`` (those labelled important)."""
        found = list(self._unfinished_rows(strict=False))
        return {
            "prompts_unfinished": len(found),
            "labels_unfinished": sum(len(rows) for _, rows in found),
            "important_unfinished": sum(int(r.get("label", 0)) for _, rows in found for r in rows),
        }

    def read_arrays(
        self,
        blocks: Sequence[str] = ("dt", "dd", "x"),
        *,
        skip_incomplete: bool = False,
        include_unfinished: bool = False,
    ) -> MinedArrays:
        """The ``blocks`` of every finished prompt's shard, validated against ``meta.json``.

        ``include_unfinished`` adds the labels already decided in unfinished prompts
        (``partial/``, :meth:`read_unfinished`): every such label is final, only the prompt's
        later mismatches are missing (``aj mine`` still running, or stopped to resume later).

        Raises :class:`MinedDataError` naming the offending file for any problem: missing
        or malformed ``meta.json``, unsupported format version, unfinished or damaged
        shards, missing tensors, wrong shapes or dtypes, NaN features, corrupt
        safetensors, ``.jsonl``/tensor row-count or label disagreement, or no data at all.
        """
        blocks = tuple(dict.fromkeys(blocks))
        bad = [b for b in blocks if b not in FLOAT_BLOCKS]
        if bad:
            raise ValueError(f"unknown block(s) {bad}; mined tensors: {list(FLOAT_BLOCKS)}")
        meta = self.read_meta()
        dims = feature_dims(meta, self.meta_path)
        unfinished = self.read_unfinished(blocks, dims) if include_unfinished else []
        try:
            stems = self.complete_shards(skip_incomplete=skip_incomplete)
        except MinedDataError:
            if not unfinished:
                raise
            stems = []
        parts: dict[str, list[np.ndarray]] = {b: [] for b in blocks}
        labels, ranks, pids, positions, truncated, harmful = [], [], [], [], [], []
        for feats, label, rank, rows in [self.read_shard(stem, blocks, dims) for stem in stems] + unfinished:
            for b in blocks:
                parts[b].append(feats[b])
            labels.append(label)
            ranks.append(rank)
            pids.extend(str(r["prompt_id"]) for r in rows)
            positions.extend(int(r.get("position", -1)) for r in rows)
            truncated.extend(bool(r.get("truncated", False)) for r in rows)
            harmful.extend(_harmful(r) for r in rows)
        if sum(len(x) for x in labels) == 0:
            raise MinedDataError(f"{self.root}: the shards hold no labelled mismatches")
        return MinedArrays(
            meta=meta,
            features={b: np.concatenate(parts[b]) for b in blocks},
            labels=np.concatenate(labels),
            prompt_ids=np.array(pids, dtype=object),
            positions=np.array(positions, dtype=np.int64),
            draft_rank=np.concatenate(ranks) if all(r is not None for r in ranks) else None,
            shards=[s.name for s in stems] + [f"partial/{rows[0]['prompt_id']}" for *_, rows in unfinished],
            truncated=np.array(truncated, dtype=bool),
            harmful=None if None in harmful else np.array(harmful, dtype=bool),
        )

    # -- packing --------------------------------------------------------------------------
    def pack(self, blocks: Sequence[str] = ("dt", "tt", "dd")) -> dict[str, int]:
        """Rewrite the finished shards' hidden-state ``blocks`` as float16 (half the bytes), atomically per file.

        For mined data kept in a repository. Readers convert back to float32; a block whose values
        do not fit float16 (|x| > 65000) stays float32. Returns ``{"shards": n, "bytes_before": ..,
        "bytes_after": ..}``. ``x`` and ``draft_rank`` are never converted.
        """
        from safetensors.numpy import load_file, save_file

        before = after = n = 0
        for stem in self.complete_shards():
            path = stem.with_suffix(".safetensors")
            before += path.stat().st_size
            try:
                tensors = load_file(str(path))
            except Exception as e:
                raise MinedDataError(f"{path}: corrupt or unreadable safetensors file ({e})") from e
            changed = False
            for b in blocks:
                x = tensors.get(b)
                if (
                    x is not None
                    and x.dtype == np.float32
                    and np.isfinite(x).all()
                    and np.abs(x).max(initial=0) <= 65000
                ):
                    tensors[b] = x.astype(np.float16)
                    changed = True
            if changed:
                tmp = path.with_name("." + path.name + ".pack.tmp")
                save_file(tensors, str(tmp))
                os.replace(tmp, path)
                n += 1
            after += path.stat().st_size
        return {"shards": n, "bytes_before": before, "bytes_after": after}

    # -- summary ------------------------------------------------------------------------
    def summary(self, *, seconds: float | None = None, seconds_partial: bool | None = None) -> dict[str, Any]:
        """Statistics of the finished prompts (``summary.json``).

        ``seconds`` is WALL-CLOCK time spent mining (given by :func:`~autojudge.core.mining.run.mine_task`;
        when None, the figure of the ``summary.json`` on disk, if that file records it: see
        :meth:`recorded_wall_seconds`), ``seconds_partial`` says it misses a session that recorded
        none. ``prompt_seconds_summed`` is the sum of the prompts' own start-to-finish times:
        with several prompts in flight they overlap, so it exceeds the wall time.
        """
        if seconds is None:
            seconds, seconds_partial = self.recorded_wall_seconds()
        prompts = self.prompt_rows()
        labels = self.label_rows()
        mined = [p for p in prompts if not p.get("skipped")]
        n_labels = len(labels)
        n_imp = sum(r["label"] for r in labels)
        # rows mined before the audit fields existed carry no finish reason: counted as unknown
        n_trunc = sum(bool(r.get("truncated")) for r in labels)
        n_unknown = sum("truncated" not in r for r in labels)
        n_imp_no_answer = sum(r["label"] == 1 and r.get("answer_alternative") is None for r in labels)
        fwd = sum(p["target_forwards"] for p in prompts)
        orig_ok = sum(bool(p["correct"]) for p in mined)
        alt_ok = sum(bool(r["correct_alternative"]) for r in labels)
        return {
            "prompts": len(prompts),
            "prompts_skipped": len(prompts) - len(mined),
            "labels": n_labels,
            "important": n_imp,
            "important_fraction": n_imp / n_labels if n_labels else 0.0,
            "truncated": n_trunc,  # rollouts cut by their token budget (flagged; excluded from training)
            "truncated_unknown": n_unknown,  # rows without a finish reason (mined by an older version)
            "important_without_answer": n_imp_no_answer,  # important because the rollout gave no answer
            "mismatches_per_prompt": n_labels / len(mined) if mined else 0.0,
            "answer_agreement": 1 - n_imp / n_labels if n_labels else 0.0,
            "original_correct_fraction": orig_ok / len(mined) if mined else 0.0,
            "alternative_correct_fraction": alt_ok / n_labels if n_labels else 0.0,
            "target_forwards": fwd,
            "target_forwards_per_label": fwd / n_labels if n_labels else 0.0,
            "target_tokens": sum(p["target_tokens"] for p in prompts),
            "seconds": None if seconds is None else round(seconds, 3),
            "seconds_partial": bool(seconds_partial) if seconds is not None else None,
            # labels already decided in prompts still unfinished (``partial/``; not training data yet)
            **self.unfinished_counts(),
            "prompt_seconds_summed": sum(p["seconds"] for p in prompts),
            "seconds_per_prompt": (sum(p["seconds"] for p in prompts) / len(prompts)) if prompts else 0.0,
        }

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    def recorded_wall_seconds(self) -> tuple[float | None, bool]:
        """``(seconds, partial)`` of the ``summary.json`` on disk; ``(None, False)`` when it records no wall time.

        A file written before ``prompt_seconds_summed`` existed holds in ``seconds`` the summed
        per-prompt times, not the wall time: it is read as recording none.
        """
        try:
            old = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None, False
        if not isinstance(old, dict) or "prompt_seconds_summed" not in old or old.get("seconds") is None:
            return None, False
        return float(old["seconds"]), bool(old.get("seconds_partial"))

    def write_summary(
        self, *, session_seconds: float | None = None, prompts_before: int = 0
    ) -> dict[str, Any]:
        """Write ``summary.json``; ``session_seconds``: the wall time of the mining session now ending.

        The wall times of sessions add up: the one recorded on disk (when the directory held
        ``prompts_before`` finished prompts before this session) plus this one. When earlier prompts
        were mined by a session that recorded no wall time (killed before its end, or an older
        version), ``seconds`` counts the known sessions only and ``seconds_partial`` is true.
        Without ``session_seconds`` the wall time on disk is kept (none for :func:`merge_stores`'s new
        directory: shards may have run in parallel, their wall times do not add up).
        """
        if session_seconds is None:
            s = self.summary()  # keeps the wall time recorded on disk, if any
        else:
            seconds, partial = float(session_seconds), False
            if prompts_before:
                earlier, earlier_partial = self.recorded_wall_seconds()
                try:
                    earlier_prompts = json.loads(self.summary_path.read_text(encoding="utf-8")).get("prompts")
                except (OSError, ValueError, AttributeError):
                    earlier_prompts = None
                seconds += earlier or 0.0
                partial = earlier is None or earlier_partial or earlier_prompts != prompts_before
            s = self.summary(seconds=seconds, seconds_partial=partial)
        atomic_write_json(self.summary_path, s)
        return s


def _read_tensors(
    path: Path, blocks: Sequence[str]
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    """``(features, label, draft_rank or None)`` of a safetensors file of mined rows."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            names = set(f.keys())
            missing = sorted((set(blocks) | {"label"}) - names)
            if missing:
                raise MinedDataError(f"{path}: missing tensor(s) {missing}; present: {sorted(names)}")
            label = f.get_tensor("label")
            feats = {b: f.get_tensor(b) for b in blocks}
            rank = f.get_tensor("draft_rank") if "draft_rank" in names else None
    except MinedDataError:
        raise
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise MinedDataError(f"{path}: corrupt or unreadable safetensors file ({e})") from e
    return feats, label, rank


def _validated(
    path: Path,
    stem: Path,
    feats: dict[str, np.ndarray],
    label: np.ndarray,
    rank: np.ndarray | None,
    rows: list[dict[str, Any]],
    dims: dict[str, int],
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None, list[dict[str, Any]]]:
    """Mined tensors checked against their ``rows`` and ``meta.json``'s dims (float16 read as float32)."""
    if label.ndim != 1:
        raise MinedDataError(f"{path}: 'label' must be 1-D, got shape {list(label.shape)}")
    n = label.shape[0]
    if not np.isin(label, (0, 1)).all():
        raise MinedDataError(f"{path}: 'label' must hold only 0 and 1")
    for b, x in list(feats.items()):
        if x.dtype == np.float16:  # a packed shard (MinedStore.pack): read as float32
            x = feats[b] = x.astype(np.float32)
        if x.dtype != np.float32:
            raise MinedDataError(f"{path}: {b!r} must be float32 (or float16, packed), got {x.dtype}")
        if x.shape != (n, dims[b]):
            raise MinedDataError(
                f"{path}: {b!r} has shape {list(x.shape)}, expected {[n, dims[b]]} (meta.json)"
            )
        if not np.isfinite(x).all():
            raise MinedDataError(f"{path}: {b!r} holds NaN or inf values")
    if rank is not None and (rank.shape != (n,) or rank.dtype.kind not in "iu"):
        raise MinedDataError(
            f"{path}: 'draft_rank' must be [N] integers, got {rank.dtype} {list(rank.shape)}"
        )
    if len(rows) != n:
        raise MinedDataError(f"{stem}: {n} tensor rows but {len(rows)} JSONL rows")
    row_labels = np.array([int(r["label"]) for r in rows], dtype=np.int8)
    if not np.array_equal(row_labels, label.astype(np.int8)):
        raise MinedDataError(f"{stem}: labels in .jsonl and .safetensors disagree")
    return feats, label.astype(np.int8), None if rank is None else rank.astype(np.int32), rows


class PartialJournal:
    """Progress of unfinished prompts on disk: ``DIR/partial/NNNNNN.safetensors`` and ``.json``.

    :meth:`save` rewrites both after every label (tensors first, then the JSON naming how many
    rows are valid, each atomically), so a run killed at any point leaves a consistent state: at
    worst the tensors hold one row more than the JSON counts, which :meth:`load` ignores. A file
    that does not parse, or belongs to another prompt, is reported and set aside
    (``NNNNNN.json.bad``) and the prompt starts over: nothing is lost that could be trusted.
    """

    FORMAT = "autojudge-partial/1"

    def __init__(self, root: Path):
        self.root = Path(root)

    def _paths(self, index: int) -> tuple[Path, Path]:
        return self.root / f"{index:06d}.json", self.root / f"{index:06d}.safetensors"

    def save(self, progress: PromptProgress) -> None:
        from autojudge.core.mining.steps import stack_features

        state_path, tensor_path = self._paths(progress.index)
        if progress.records:
            atomic_save_tensors(tensor_path, stack_features(progress.records))
        state = {
            "format": self.FORMAT,
            **{k: getattr(progress, k) for k in _PROGRESS_FIELDS},
            "rows": [r.row() for r in progress.records],
        }
        atomic_write_bytes(state_path, (json.dumps(state, default=str) + "\n").encode())

    def load(self, index: int, prompt_id: str) -> PromptProgress | None:
        import warnings

        from safetensors.torch import load_file

        from autojudge.core.mining.steps import PromptProgress, record_from_row

        state_path, tensor_path = self._paths(index)
        if not state_path.is_file():
            return None
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            if state.get("format") != self.FORMAT or state.get("prompt_id") != prompt_id:
                raise ValueError(f"not the progress of prompt {prompt_id!r} in format {self.FORMAT}")
            rows = state["rows"]
            tensors = load_file(str(tensor_path)) if rows else {}
            if rows and any(t.shape[0] < len(rows) for t in tensors.values()):
                raise ValueError(f"{tensor_path.name} holds fewer rows than the {len(rows)} labels saved")
            records = [
                record_from_row(row, {name: t[i] for name, t in tensors.items() if name != "label"})
                for i, row in enumerate(rows)
            ]
            fields = {k: state[k] for k in _PROGRESS_FIELDS}
        except Exception as e:  # corrupt JSON or tensors, a missing key: start the prompt over
            warnings.warn(
                f"{state_path}: unusable progress of an unfinished prompt ({e}); it is set aside as "
                f"{state_path.name}.bad and the prompt is mined from the beginning",
                stacklevel=2,
            )
            os.replace(state_path, state_path.with_name(state_path.name + ".bad"))
            return None
        return PromptProgress(**fields, records=records)

    def discard(self, index: int) -> None:
        for p in self._paths(index):
            p.unlink(missing_ok=True)


#: the :class:`~autojudge.core.mining.steps.PromptProgress` fields saved besides its records
_PROGRESS_FIELDS = (
    "index", "prompt_id", "response", "correct", "finish_reason", "tokens", "text", "next_pos",
    "rollouts", "target_forwards", "target_tokens", "seconds",
)  # fmt: skip


def read_mined(
    path: str | Path,
    blocks: Sequence[str] = ("dt", "dd", "x"),
    *,
    skip_incomplete: bool = False,
    include_unfinished: bool = False,
) -> MinedArrays:
    """:meth:`MinedStore.read_arrays` of the mined directory ``path``."""
    return MinedStore(path).read_arrays(
        blocks, skip_incomplete=skip_incomplete, include_unfinished=include_unfinished
    )


def merge_stores(sources: Iterable[str | Path], out: str | Path) -> MinedStore:
    """Merge shard directories of one run (``--shard i/n``) into ``out``; settings must agree."""
    stores = [MinedStore(s) for s in sources]
    if not stores:
        raise MinedDataError("nothing to merge")
    metas = [s.read_meta() for s in stores]
    for s, m in zip(stores[1:], metas[1:], strict=True):
        if _comparable(m) != _comparable(metas[0]):
            raise MinedDataError(
                f"cannot merge {s.root} with {stores[0].root}: different models, task or settings"
            )
    dest = MinedStore(out)
    if dest.meta_path.exists():
        raise MinedDataError(f"{dest.root} already exists; merge into a new directory")
    for s in stores:
        s.remove_orphans()
    seen: dict[int, Path] = {}
    for s in stores:
        for idx in s.done_indices():
            if idx in seen:
                raise MinedDataError(
                    f"prompt {idx} was mined in both {seen[idx]} and {s.root}: overlapping shards"
                )
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
