"""Evaluating decoding modes on a task: per-sample rows (JSONL) and per-mode aggregates.

A *mode* (:class:`ModeSpec`) is one way of decoding: target only (``ar``),
lossless speculative decoding (``sd``), the trained judge at a threshold
(``judge@T``) or the Top-K baseline (``topk:K``). :func:`evaluate_modes` decodes
every example with every mode through ONE :class:`~autojudge.core.engine.Engine`, example by
example (all modes of an example run back to back, so machine noise spreads
evenly over modes), and appends one JSON row per (mode, example) to
``DIR/<mode>.jsonl`` as soon as it is computed.

Rows are cached per mode under a key (task, models, decoding settings, judge
artifact contents, mode; not the list of examples: a row is one example's and
names it): a mode file whose key matches and that holds every example is reused
as is; with ``resume=True`` a matching but incomplete file is continued (only the
missing examples are decoded), so a run extended from 100 to 300 problems decodes
200. Rows of examples outside the current list stay in the file, unused. A
truncated last line (a crash mid-write) is dropped. A key file written when the
key still held the example ids (before 0.2.0) is recognised and its rows kept.

:func:`aggregate_rows` / :func:`aggregate_modes` recompute everything from the
rows: accuracy, its delta vs target-only in points, ``mean_acceptance_length``
(tokens emitted per verification cycle, 1.0 for target-only), the acceptance
histogram, tokens/s (output tokens / wall time, summed over samples) and the
speed-ups vs target-only and vs lossless SD. Each row records its *sitting* (the run that
decoded it: rows of one sitting were timed back to back under the same machine load); a
speed-up between modes whose rows do not all share one known sitting (after ``--resume``, or
rows written before sittings were recorded) is flagged: ``speedup_vs_ar_same_sitting`` false.

Batches: with ``batch > 1`` and a batched engine (transformers backend:
:class:`~autojudge.core.batched.BatchedEngine`), each mode's missing examples are decoded
at most ``batch`` at a time (continuous batching), each row saved when its example finishes; rows are token- and metric-identical to batch 1 (per-cycle counts, judge
decisions), only the times differ: a row records its ``batch`` (size, id, wall time) and the
aggregate's tokens/s is then a *throughput* (tokens / summed batch wall times,
``tokens_per_s_kind``), not the per-prompt latency of batch 1.

Limits: greedy decoding, one process.
Prefill: on the transformers engine the target's KV cache is not reused across
calls (``reuse_cache=False``), so every mode pays its own prefill and the timings
of modes compare fairly. On vLLM (``--backend vllm``) that does not hold: the
engine ignores ``reuse_cache`` and keeps vLLM's prefix caching on; ``ar`` runs on
its own target-only engine and every other mode on one shared speculative engine,
so whatever that engine has already computed (the same prompt decoded in an
earlier mode of the example, a prefix common to the prompts) is served from the
cache. There the first speculative mode of an example (``sd``) pays its prefill,
the later ones (``judge@T``, ``topk:K``) mostly do not, which flatters their
tokens/s by up to one prompt's prefill per sample. Tokens/s are wall-clock on
whatever else the machine runs: compare modes of one run, not runs of different
machines.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autojudge.core.metrics import GenerationMetrics
from autojudge.core.task import Example, Task

if TYPE_CHECKING:
    from autojudge.core.engine import Engine, GenerationResult

ROW_FORMAT = "autojudge-eval-row/1"

#: this process's sitting id (:func:`process_sitting`); a :class:`~autojudge.core.run.pipeline.Pipeline`
#: gives each run its own (:func:`new_sitting`)
PROCESS_SITTING: str | None = None


def new_sitting() -> str:
    """A fresh sitting id: UTC time, process id and a random part (unique across processes and runs)."""
    import time
    import uuid

    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def process_sitting() -> str:
    """This process's sitting id (made on first use)."""
    global PROCESS_SITTING
    if PROCESS_SITTING is None:
        PROCESS_SITTING = new_sitting()
    return PROCESS_SITTING


# -- modes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeSpec:
    """One decoding mode. ``kind`` is ``ar``, ``sd``, ``judge`` (trained artifact) or ``topk``."""

    kind: str
    threshold: float | None = None
    top_k: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("ar", "sd", "judge", "topk"):
            raise ValueError(f"unknown mode kind {self.kind!r}")
        if self.kind == "judge" and (self.threshold is None or not 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"a judge mode needs a threshold in [0, 1], got {self.threshold!r}")
        if self.kind == "topk" and (self.top_k is None or self.top_k < 1):
            raise ValueError(f"a topk mode needs K >= 1, got {self.top_k!r}")

    @property
    def name(self) -> str:
        if self.kind == "judge":
            return f"judge@{self.threshold:.4g}"
        if self.kind == "topk":
            return f"topk:{self.top_k}"
        return self.kind

    @property
    def engine_mode(self) -> str:
        return "judge" if self.kind in ("judge", "topk") else self.kind

    @property
    def file_stem(self) -> str:
        """A file-system-safe version of :attr:`name` (``topk:4`` -> ``topk_4``)."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "threshold": self.threshold, "top_k": self.top_k}


def build_modes(
    thresholds: Iterable[float] = (), top_ks: Iterable[int] = (), *, ar: bool = True, sd: bool = True
) -> list[ModeSpec]:
    """``ar``, ``sd``, judge thresholds (ascending) and Top-K (ascending), duplicates (same name) dropped."""
    modes = ([ModeSpec("ar")] if ar else []) + ([ModeSpec("sd")] if sd else [])
    modes += [ModeSpec("judge", threshold=float(t)) for t in sorted(set(float(t) for t in thresholds))]
    modes += [ModeSpec("topk", top_k=int(k)) for k in sorted(set(int(k) for k in top_ks))]
    seen: set[str] = set()
    out = []
    for m in modes:
        if m.name not in seen:
            seen.add(m.name)
            out.append(m)
    return out


def make_judge(
    mode: ModeSpec, artifact: str | Path | None = None, pair: Any | None = None, device: str = "cpu"
):
    """The :class:`~autojudge.core.judge.Judge` of ``mode`` (None for ``ar``/``sd``).

    ``judge`` modes load ``artifact`` with the mode's threshold, checked against
    ``pair``'s fingerprints when given.
    """
    from autojudge.judges.spec import load_judge_spec

    if mode.kind in ("ar", "sd"):
        return None
    if mode.kind == "topk":
        return load_judge_spec(f"topk:{mode.top_k}")
    if artifact is None:
        raise ValueError(f"mode {mode.name} needs a judge artifact")
    return load_judge_spec(
        str(artifact),
        target=pair.target if pair is not None else None,
        draft=pair.draft if pair is not None else None,
        threshold=mode.threshold,
        device=device,
    )


# -- hashing -----------------------------------------------------------------------------------


def stable_hash(obj: Any) -> str:
    """sha256 (hex, first 16 chars) of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# -- rows --------------------------------------------------------------------------------------


def sample_row(
    mode: ModeSpec,
    index: int,
    example: Example,
    result: GenerationResult,
    answer: Any,
    correct: bool,
    sitting: str | None = None,
    batch: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One JSON row: identity, output, answer, correctness, metrics and the per-cycle lists.

    ``sitting`` (default: :func:`process_sitting`) says in which run the row was timed:
    wall-clock figures compare fairly only between rows of one sitting (:func:`same_sitting`).
    ``batch`` (``{"size": n, "id": ..., "wall_time": s}``) says how many examples were decoded
    together: a row of a batch of ``n > 1`` has a per-row ``wall_time`` that includes the passes
    shared with the other rows, and its tokens/s is part of a throughput figure.
    """
    m = result.metrics
    return {
        "sitting": sitting or process_sitting(),
        "format": ROW_FORMAT,
        "prompt_id": example.id,
        "index": index,
        "mode": mode.name,
        "output": result.text,
        "answer": answer,
        "reference": example.reference,
        "correct": bool(correct),
        "finish_reason": result.finish_reason,
        "metrics": m.as_dict(),
        "cycles": {
            "proposed": list(m.proposed_per_cycle),
            "accepted": list(m.accepted_per_cycle),
            "emitted": list(m.emitted_per_cycle),
        },
        **({"batch": dict(batch)} if batch is not None else {}),
    }


def metrics_from_row(row: Mapping[str, Any]) -> GenerationMetrics:
    """Rebuild the :class:`GenerationMetrics` of a row (counts, times and per-cycle lists)."""
    d = row["metrics"]
    c = row.get("cycles") or {}
    m = GenerationMetrics()
    for f in (
        "num_output_tokens", "num_prompt_tokens", "num_drafts", "num_draft_tokens", "num_accepted_tokens",
        "num_judge_accepted", "num_judge_calls", "num_target_forwards", "num_target_tokens",
    ):  # fmt: skip
        setattr(m, f, int(d.get(f, 0)))
    for f in ("prefill_time", "draft_time", "target_time", "judge_time", "wall_time"):
        setattr(m, f, float(d.get(f, 0.0)))
    m.proposed_per_cycle = [int(x) for x in c.get("proposed", [])]
    m.accepted_per_cycle = [int(x) for x in c.get("accepted", [])]
    m.emitted_per_cycle = [int(x) for x in c.get("emitted", [])]
    return m


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a truncated or corrupt LAST line (crash mid-write) is dropped, others raise."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: corrupt row ({e.msg})") from e
    return rows


def _write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def _append_row(path: Path, row: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# -- running -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSettings:
    """Decoding settings shared by every mode (they enter the cache key)."""

    k: int = 5
    max_new_tokens: int = 256

    def as_dict(self) -> dict[str, Any]:
        return {"k": self.k, "max_new_tokens": self.max_new_tokens}


def mode_key(base_key: Mapping[str, Any], mode: ModeSpec, judge_sha256: str | None) -> str:
    """Cache key of one mode's rows: the evaluation inputs plus the mode (and the judge file for ``judge``).

    Target-only rows do not depend on the draft length, so ``k`` is left out of ``ar``'s key: a copy of a
    run directory re-run at another ``-k`` keeps its ``ar`` rows (e.g. Figure 3's k = 16 and k = 5 runs).
    """
    base = {key: v for key, v in base_key.items() if not (mode.kind == "ar" and key == "k")}
    return stable_hash(
        {
            "base": base,
            "mode": mode.describe(),
            "judge": judge_sha256 if mode.kind == "judge" else None,
        }
    )


def key_file_matches(key_file: Mapping[str, Any], key: str, mode: ModeSpec, judge_sha256: str | None) -> bool:
    """Whether the rows under a ``.key.json`` were decoded with the inputs of ``key``.

    Before 0.2.0 the key also held the list of example ids (``base["ids"]``), so extending a run
    re-decoded everything. Such a file still matches when its stored key is what its stored base
    hashes to with this mode and judge (it was written with these very inputs) and that base,
    without the ids, gives ``key``.
    """
    if key_file.get("key") == key:
        return True
    base = key_file.get("base")
    if not isinstance(base, dict) or "ids" not in base:
        return False
    if mode_key(base, mode, judge_sha256) != key_file.get("key"):
        return False
    return mode_key({k: v for k, v in base.items() if k != "ids"}, mode, judge_sha256) == key


def decode_kwargs(
    task: Task, mode: ModeSpec, settings: EvalSettings, judges: Mapping[str, Any]
) -> dict[str, Any]:
    """The decoding arguments of one mode, the same for the batch-1 and the batched path (their rows must agree)."""
    return {
        "mode": mode.engine_mode,
        "judge": judges.get(mode.name),
        "k": settings.k,
        "max_new_tokens": settings.max_new_tokens,
        "stop_sequences": task.stop_sequences,
    }


def graded_row(
    task: Task,
    mode: ModeSpec,
    idx: int,
    ex: Example,
    res: Any,
    sitting: str | None,
    *,
    batch: Mapping[str, Any],
) -> dict[str, Any]:
    """The row of one decoded example: its answer extracted and graded by ``task`` (both decoding paths)."""
    answer = task.extract_answer(res.text)
    correct = answer is not None and bool(task.is_correct(answer, ex))
    return sample_row(mode, idx, ex, res, answer, correct, sitting, batch=batch)


ProgressFn = Callable[[int, int, str], None]


def evaluate_modes(
    task: Task,
    engine: Engine,
    examples: Sequence[Example],
    modes: Sequence[ModeSpec],
    out_dir: str | Path,
    *,
    settings: EvalSettings,
    judges: Mapping[str, Any],
    base_key: Mapping[str, Any],
    judge_sha256: str | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    sitting: str | None = None,
    batch: int = 1,
    batch_engine: Any | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Decode ``examples`` with each mode; returns rows per mode name, in ``examples`` order.

    ``judges`` maps a mode name to its judge (``ar``/``sd`` need none). Files:
    ``out_dir/<mode.file_stem>.jsonl`` (rows) and ``.key.json`` (the cache key).
    ``progress(done, total, mode_name)`` is called after each decoded sample. Each new row
    records ``sitting`` (default: :func:`process_sitting`); rows kept from a file keep theirs.

    ``batch > 1`` with a ``batch_engine`` (an object with the ``generate_batch`` of
    :class:`~autojudge.core.batched.BatchedEngine`): mode by mode, the examples not yet done are
    decoded in one ``generate_batch`` call with at most ``batch`` rows at once (continuous
    batching), and each row is appended as soon as its example finishes (``on_result``; rows are
    in finishing order on disk), so a crash loses only the rows in flight and never duplicates
    one. Every row's tokens and per-cycle metrics equal those of the one-at-a-time path (the
    batched engine's invariant); its ``batch`` field records the batch size, the call's id and
    the call's wall time up to that row's finish, from which :func:`aggregate_rows` computes
    throughput (tokens / the call's time to its last finished row).
    Otherwise (``batch == 1``, or no batch engine: e.g. vLLM) examples are decoded one at a time.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise ValueError("example ids must be unique")
    have: dict[str, dict[str, dict[str, Any]]] = {}
    for mode in modes:
        key = mode_key(base_key, mode, judge_sha256)
        rows_path, key_path = out / f"{mode.file_stem}.jsonl", out / f"{mode.file_stem}.key.json"
        reusable = key_path.is_file() and key_file_matches(
            json.loads(key_path.read_text()), key, mode, judge_sha256
        )
        kept: dict[str, dict[str, Any]] = {}  # every example's row in the file, also those not evaluated now
        for r in read_rows(rows_path) if reusable else []:
            if r.get("mode") == mode.name and isinstance(r.get("prompt_id"), str):
                kept.setdefault(r["prompt_id"], r)
        by_id = {i: kept[i] for i in ids if i in kept}
        if len(by_id) < len(ids) and not resume:
            by_id, kept = {}, {}  # an incomplete file is only continued with resume=True
        wanted = set(ids)
        _write_rows(
            rows_path, [by_id[i] for i in ids if i in by_id] + [r for i, r in kept.items() if i not in wanted]
        )
        key_path.write_text(
            json.dumps({"key": key, "mode": mode.describe(), "base": dict(base_key)}, default=str) + "\n"
        )
        have[mode.name] = by_id
    total = len(ids) * len(modes)
    done = sum(len(v) for v in have.values())
    if progress:
        progress(done, total, "")
    if batch > 1 and batch_engine is not None:
        _evaluate_batched(
            task, batch_engine, examples, modes, out, have, settings=settings, judges=judges,
            batch=batch, progress=progress, done=done, total=total, sitting=sitting,
        )  # fmt: skip
        return {m.name: [have[m.name][i] for i in ids] for m in modes}
    for idx, ex in enumerate(examples):
        prompt = None
        for mode in modes:
            if ex.id in have[mode.name]:
                continue
            if prompt is None:
                prompt = task.render_prompt(ex, engine.tokenizer)
            res = engine.generate(prompt, **decode_kwargs(task, mode, settings, judges), reuse_cache=False)
            row = graded_row(task, mode, idx, ex, res, sitting, batch={"size": 1})
            _append_row(out / f"{mode.file_stem}.jsonl", row)
            have[mode.name][ex.id] = row
            done += 1
            if progress:
                progress(done, total, mode.name)
    return {m.name: [have[m.name][i] for i in ids] for m in modes}


def _evaluate_batched(
    task: Task,
    engine: Any,
    examples: Sequence[Example],
    modes: Sequence[ModeSpec],
    out: Path,
    have: dict[str, dict[str, dict[str, Any]]],
    *,
    settings: EvalSettings,
    judges: Mapping[str, Any],
    batch: int,
    progress: ProgressFn | None,
    done: int,
    total: int,
    sitting: str | None,
) -> None:
    """The batched path of :func:`evaluate_modes`: per mode, one ``generate_batch`` call over the missing
    examples with at most ``batch`` rows at once (continuous batching: a finished row's slot takes the
    next example). Each row is graded, saved and counted as soon as its example finishes, on one worker
    thread, so grading (a sandbox run for code) overlaps decoding and stays out of the timings."""
    import time
    import uuid
    from concurrent.futures import Future, ThreadPoolExecutor

    count = [done]  # rows done over all modes, for progress (touched by the worker thread only)

    def save(mode: ModeSpec, idx: int, ex: Example, res: Any, info: dict[str, Any], rows_path: Path) -> None:
        row = graded_row(task, mode, idx, ex, res, sitting, batch=info)
        _append_row(rows_path, row)
        have[mode.name][ex.id] = row
        count[0] += 1
        if progress:
            progress(count[0], total, mode.name)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aj-grade") as grader:
        for mode in modes:
            todo = [(idx, ex) for idx, ex in enumerate(examples) if ex.id not in have[mode.name]]
            if not todo:
                continue
            size, call_id, t0 = min(batch, len(todo)), uuid.uuid4().hex[:12], time.perf_counter()
            rows_path = out / f"{mode.file_stem}.jsonl"
            pending: list[Future[None]] = []

            def finished(i: int, res: Any, *, mode=mode, todo=todo, size=size, call_id=call_id, t0=t0,
                         rows_path=rows_path, pending=pending) -> None:  # fmt: skip
                # the call's wall time so far: the batch's time up to its last finished row (batch_wall_time)
                info = {"size": size, "id": call_id, "wall_time": time.perf_counter() - t0}
                idx, ex = todo[i]
                pending.append(grader.submit(save, mode, idx, ex, res, info, rows_path))

            try:
                engine.generate_batch(
                    [task.render_prompt(ex, engine.tokenizer) for _, ex in todo],
                    **decode_kwargs(task, mode, settings, judges),
                    max_batch=size,
                    on_result=finished,
                )
            finally:  # rows already decoded are graded and saved even when the decode fails
                for f in pending:
                    f.result()


def load_mode_rows(
    out_dir: str | Path, mode: ModeSpec, ids: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """``mode``'s rows in problem order (batched decoding appends them in finishing order); with ``ids``,
    only those examples' rows (a file may hold rows of examples a larger earlier run evaluated)."""
    rows = read_rows(Path(out_dir) / f"{mode.file_stem}.jsonl")
    if ids is not None:
        wanted = set(ids)
        rows = [r for r in rows if r.get("prompt_id") in wanted]
    return sorted(rows, key=lambda r: r.get("index", 0))


def mode_complete(out_dir: str | Path, mode: ModeSpec, ids: Sequence[str], key: str) -> bool:
    """True when ``mode``'s file has ``key`` (exactly: an older key file makes its stage run once more, which
    rewrites it and decodes nothing new) and one row for every id."""
    out = Path(out_dir)
    key_path = out / f"{mode.file_stem}.key.json"
    if not key_path.is_file() or json.loads(key_path.read_text()).get("key") != key:
        return False
    got = {r.get("prompt_id") for r in read_rows(out / f"{mode.file_stem}.jsonl")}
    return set(ids) <= got


# -- aggregation -------------------------------------------------------------------------------


def aggregate_rows(
    rows: Sequence[Mapping[str, Any]], context: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Per-mode figures recomputed from its rows (no reference needed); ``context``: the mode's whole
    row file, for the throughput of batches only partly in ``rows`` (:func:`batch_wall_time`)."""
    merged = GenerationMetrics.merge(metrics_from_row(r) for r in rows)
    sizes, wall = batch_wall_time(rows, context)
    n = len(rows)
    correct = sum(bool(r["correct"]) for r in rows)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else float("nan"),
        "answered": sum(r.get("answer") is not None for r in rows),
        "num_output_tokens": merged.num_output_tokens,
        "num_drafts": merged.num_drafts,
        "num_draft_tokens": merged.num_draft_tokens,
        "num_accepted_tokens": merged.num_accepted_tokens,
        "num_judge_accepted": merged.num_judge_accepted,
        "num_judge_calls": merged.num_judge_calls,
        "num_target_forwards": merged.num_target_forwards,
        "mean_acceptance_length": merged.mean_acceptance_length,
        "draft_acceptance_rate": merged.draft_acceptance_rate,
        "acceptance_per_position": merged.acceptance_per_position(),
        "acceptance_histogram": merged.acceptance_histogram(),
        "wall_time": wall,
        "tokens_per_s": merged.num_output_tokens / wall if wall > 0 else 0.0,
        # "throughput" when some rows were decoded in batches of several examples, else "latency"
        "tokens_per_s_kind": "throughput" if max(sizes, default=1) > 1 else "latency",
        "batch_sizes": sizes,
        "finish_reasons": {
            k: sum(r.get("finish_reason") == k for r in rows) for k in ("eos", "stop", "length")
        },
        "sittings": row_sittings(rows),
    }


def batch_wall_time(
    rows: Iterable[Mapping[str, Any]], context: Iterable[Mapping[str, Any]] | None = None
) -> tuple[list[int], float]:
    """The distinct batch sizes of ``rows`` (1 for rows that record none) and their wall time.

    A row decoded alone counts its own ``wall_time``; rows decoded together in one batch count
    that batch's wall time once (their per-row times overlap), so tokens / this time is the
    throughput of the batched run.

    ``context``: every row the batches of ``rows`` may hold (the mode's whole file). With it, a
    batch only partly in ``rows`` (a report on fewer problems than a cached run decoded) is charged
    its wall time in proportion to the output tokens of its rows in ``rows``, so tokens / this time
    is that batch's throughput. Without it, such a batch counts its time up to the last of its rows
    in ``rows``, which overstates the time of a subset (tokens/s too low). Limit: a batch cut short
    (a crash) counts only the rows it finished, and its time up to the last of them.
    """
    sizes: set[int] = set()
    mine: dict[str, tuple[float, int]] = {}  # batch id -> (latest finish among rows, their tokens)
    wall = 0.0
    for r in rows:
        b = r.get("batch") or {}
        size = int(b.get("size", 1))
        sizes.add(size)
        if size > 1 and b.get("id") is not None:  # rows record the batch's time up to their finish
            _add_to_batch(mine, r)
        else:
            wall += float(r["metrics"].get("wall_time", 0.0))
    whole: dict[str, tuple[float, int]] = {}
    for r in context if context is not None else ():
        if str((r.get("batch") or {}).get("id")) in mine:
            _add_to_batch(whole, r)
    for bid, (t, n) in mine.items():
        full_t, full_n = whole.get(bid, (t, n))
        wall += full_t * n / full_n if full_n > n else t
    return sorted(sizes), wall


def _add_to_batch(totals: dict[str, tuple[float, int]], row: Mapping[str, Any]) -> None:
    """Fold ``row`` into ``totals[batch id]``: (the batch's latest recorded finish, its output tokens)."""
    b = row["batch"]
    t, n = totals.get(str(b["id"]), (0.0, 0))
    tokens = int(row["metrics"].get("num_output_tokens", 0))
    totals[str(b["id"])] = (max(t, float(b.get("wall_time", 0.0))), n + tokens)


def row_sittings(rows: Iterable[Mapping[str, Any]]) -> list[str | None]:
    """The distinct sittings of ``rows``, sorted; None stands for rows that record none (older files)."""
    found = {r.get("sitting") for r in rows}
    return sorted(found - {None}) + ([None] if None in found else [])


def same_sitting(*row_sets: Iterable[Mapping[str, Any]]) -> bool:
    """Whether every row of ``row_sets`` was decoded in one and the same KNOWN sitting.

    Only then is a wall-clock ratio between them (a speed-up) a like-for-like comparison; rows
    decoded in another sitting (a ``--resume`` later, under another machine load) or of unknown
    sitting (rows written before sittings were recorded) are not.
    """
    found = row_sittings(r for rows in row_sets for r in rows)
    return len(found) == 1 and found[0] is not None


def _ratio(a: float, b: float) -> float | None:
    return a / b if b and not math.isnan(b) and b > 0 else None


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion ``k / n`` (None for ``n = 0``)."""
    if n <= 0:
        return None
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def paired_change(mine: Sequence[bool], ref: Sequence[bool], z: float = 1.959964) -> dict[str, Any]:
    """Paired accuracy change of one mode against the reference on the same problems.

    ``gained``: problems wrong in the reference and right here; ``lost``: the reverse;
    ``delta_points`` and its 95% interval (``ci95_points``, normal approximation of the
    per-problem differences, which is what a paired comparison needs: the two modes'
    own intervals overlap far more than their difference varies).
    """
    n = len(mine)
    gained = sum(a and not b for a, b in zip(mine, ref, strict=True))
    lost = sum(b and not a for a, b in zip(mine, ref, strict=True))
    if n == 0:
        return {"n": 0, "gained": 0, "lost": 0, "delta_points": None, "ci95_points": None}
    d = [int(a) - int(b) for a, b in zip(mine, ref, strict=True)]
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(var / n)
    return {"n": n, "gained": gained, "lost": lost, "delta_points": 100 * mean,
            "ci95_points": [100 * (mean - half), 100 * (mean + half)]}  # fmt: skip


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def aggregate_modes(
    rows_by_mode: Mapping[str, Sequence[Mapping[str, Any]]],
    modes: Sequence[ModeSpec],
    *,
    reference: str = "ar",
    lossless: str = "sd",
    context_by_mode: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Aggregates per mode plus deltas vs ``reference`` (points) and speed-ups vs ``reference``/``lossless``.

    ``context_by_mode``: each mode's whole row file, when ``rows_by_mode`` holds only some of its
    problems (tokens/s is then the throughput of the batches that decoded them, see
    :func:`batch_wall_time`).

    ``answer_agreement_vs_ar``: fraction of examples whose extracted answer equals
    the reference mode's (same prompt id), a lower-noise view of the accuracy cost.
    """
    ctx = context_by_mode or {}
    aggs = {m.name: {**m.describe(), **aggregate_rows(rows_by_mode[m.name], ctx.get(m.name))} for m in modes}
    ref, ll = aggs.get(reference), aggs.get(lossless)
    ref_answers = {r["prompt_id"]: r.get("answer") for r in rows_by_mode.get(reference, [])}
    ref_rows = {r["prompt_id"]: r for r in rows_by_mode.get(reference, [])}
    for m in modes:
        a = aggs[m.name]
        ci = wilson_interval(a["correct"], a["n"])
        a["accuracy_ci95"] = list(ci) if ci is not None else None
        paired = [r for r in rows_by_mode[m.name] if r["prompt_id"] in ref_rows]
        if ref is not None:
            a["paired_vs_ar"] = paired_change(
                [bool(r["correct"]) for r in paired],
                [bool(ref_rows[r["prompt_id"]]["correct"]) for r in paired],
            )
            # how far each output agrees with target-only's text: all of it (identical), or up to where
            outs = [
                (str(r.get("output", "")), str(ref_rows[r["prompt_id"]].get("output", ""))) for r in paired
            ]
            a["identical_output_vs_ar"] = sum(x == y for x, y in outs) / len(outs) if outs else None
            a["common_prefix_vs_ar"] = (
                sum(_common_prefix(x, y) / max(len(y), 1) for x, y in outs) / len(outs) if outs else None
            )
        a["accuracy_delta_points"] = 100.0 * (a["accuracy"] - ref["accuracy"]) if ref else None
        a["speedup_vs_ar"] = _ratio(a["tokens_per_s"], ref["tokens_per_s"]) if ref else None
        a["speedup_vs_sd"] = _ratio(a["tokens_per_s"], ll["tokens_per_s"]) if ll else None
        rows = rows_by_mode[m.name]
        # a wall-clock speed-up is like-for-like only when both modes' rows were timed in one sitting
        a["speedup_vs_ar_same_sitting"] = same_sitting(rows, rows_by_mode[reference]) if ref else None
        a["speedup_vs_sd_same_sitting"] = same_sitting(rows, rows_by_mode[lossless]) if ll else None
        same = [r for r in rows if r["prompt_id"] in ref_answers]
        a["answer_agreement_vs_ar"] = (
            sum(r.get("answer") == ref_answers[r["prompt_id"]] for r in same) / len(same)
            if same and ref
            else None
        )
    return aggs
