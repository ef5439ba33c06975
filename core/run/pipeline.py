"""``aj run``: mine -> train -> select the threshold on validation -> evaluate -> report, cached per stage.

Stages and their outputs in the run directory ``OUT``:

1. ``mine``: :func:`autojudge.core.mining.run.mine_task` on the first ``mine_limit``
   prompts of the task's mining split -> ``OUT/mined``. With ``mined`` (``--mined DIR``)
   an existing ``aj mine`` / ``aj mine-merge`` directory is used instead, after checking
   that its task, split and models are this run's; validation then starts after the
   last prompt it mined.
2. ``train``: :func:`autojudge.judges.train.train_judges` -> ``OUT/judge.safetensors``
   (+ ``judge.report.json``); its recall-calibrated threshold is a candidate below.
3. ``select``: on VALIDATION prompts (the ``val_limit`` prompts of the mining split
   right after the mined ones, never mined, never the eval split) decode
   target-only and the judge at each candidate threshold (``val_thresholds`` plus
   the calibrated one), then :func:`~autojudge.judges.calibrate.pick_threshold_within_budget`
   picks the most aggressive threshold within ``max_accuracy_drop`` points of
   target-only -> ``OUT/validation/`` (rows, ``selection.json``). When none is within
   budget the recommendation is 0 (lossless).
4. ``evaluate``: the first ``eval_limit`` prompts of the eval split, modes ``ar``, ``sd``,
   the judge at ``thresholds`` + calibrated + recommended, and ``topk:K`` for each
   ``top_k`` -> ``OUT/eval/<mode>.jsonl``.
5. ``report``: :func:`autojudge.core.run.report.write_report` -> ``summary.json``,
   ``report.md``, ``plots/*.png``.

Caching: ``OUT/state.json`` records per stage an inputs hash (task, model
fingerprints, dtype, limits, settings, upstream stage hashes), a status
(``running``/``done``) and the seconds it took. A stage whose hash is unchanged,
that finished, whose outputs check out and none of whose upstream stages ran in
this invocation is skipped. A stage left ``running``
(interrupted) needs ``resume=True`` (``--resume``): mining continues through
``mine_task(resume=True)``, evaluation per sample from the JSONL rows. Decoded
rows are cached per mode, so adding a threshold decodes only the new mode.

Limits: one process, batch size 1; mined data is never deleted by the pipeline
(changing mining settings needs a new ``OUT``); the validation and eval sets are
tiny by default (CPU budget), so accuracies carry large error bars.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autojudge.core.files import atomic_write_json
from autojudge.core.mining.store import MinedStore, MinedStoreError
from autojudge.core.run.evaluate import (
    EvalSettings,
    ModeSpec,
    aggregate_modes,
    build_modes,
    evaluate_modes,
    file_sha256,
    make_judge,
    mode_complete,
    mode_key,
    stable_hash,
)

STATE_FORMAT = "autojudge-run-state/1"
STAGES: tuple[str, ...] = ("mine", "train", "select", "evaluate", "report")


class PipelineError(RuntimeError):
    """The run cannot go on; the message says what to change."""


@dataclass
class RunConfig:
    """Everything ``aj run`` takes. Accuracy budgets are in points (1.0 = one percentage point)."""

    task: str
    out: Path
    dataset: str | None = None  # for tasks offering datasets (``--dataset``, e.g. ``code``); None: the default
    draft: str | None = None
    target: str | None = None
    # defaults sized for a 2-core CPU (docs/run.md, "Defaults and their cost"): a demonstration of
    # the pipeline on a handful of prompts, not an accuracy measurement
    mine_limit: int = 2
    val_limit: int = 1
    eval_limit: int = 2
    thresholds: tuple[float, ...] = ()
    val_thresholds: tuple[float, ...] = ()
    top_k: tuple[int, ...] = (4,)
    max_accuracy_drop: float = 1.0
    max_new_tokens: int = 320
    k: int = 5
    dtype: str | None = None
    device: str = "cpu"
    backend: str = "transformers"  # decoding backend of the select/evaluate stages: transformers or vllm
    features: str = "dd+dt"
    target_recall: float = 0.9
    max_mismatches: int | None = 3
    mined: Path | None = None  # an existing mined directory instead of the mine stage
    data_dir: Path | None = None
    resume: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("mine_limit", "val_limit", "eval_limit", "max_new_tokens", "k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.mine_limit < 2:
            raise ValueError("mine_limit must be >= 2: the judge's validation split is by prompt")
        if any(not 0.0 <= t <= 1.0 for t in (*self.thresholds, *self.val_thresholds)):
            raise ValueError("thresholds must be in [0, 1]")
        if any(k < 1 for k in self.top_k):
            raise ValueError("top-K values must be >= 1")
        if self.max_accuracy_drop < 0:
            raise ValueError("max_accuracy_drop must be >= 0 (points)")
        if self.backend not in ("transformers", "vllm"):
            raise ValueError(f"backend must be 'transformers' or 'vllm', got {self.backend!r}")
        if self.backend == "vllm" and ("dd" in self.features or self.features.strip() == "all"):
            raise ValueError(
                f"--backend vllm cannot compute the draft hidden states ('dd') of --features {self.features!r}: "
                "use --features dt+x or dt (docs/vllm.md)"
            )

    def settings(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        d["data_dir"] = str(self.data_dir) if self.data_dir else None
        d["mined"] = str(self.mined) if self.mined else None
        for k in ("resume", "progress", "extra"):
            d.pop(k)
        return d


# -- state ---------------------------------------------------------------------------------------


class RunState:
    """``OUT/state.json``: per stage ``{hash, status, seconds, finished}``; written atomically."""

    def __init__(self, root: Path):
        self.path = root / "state.json"
        self.data: dict[str, Any] = {"format": STATE_FORMAT, "stages": {}}
        if self.path.is_file():
            data = json.loads(self.path.read_text())
            if data.get("format") == STATE_FORMAT:
                self.data = data

    def get(self, stage: str) -> dict[str, Any] | None:
        return self.data["stages"].get(stage)

    def set(self, stage: str, **rec: Any) -> None:
        self.data["stages"][stage] = rec
        atomic_write_json(self.path, self.data)


# -- the pipeline --------------------------------------------------------------------------------


class Pipeline:
    """Runs the stages of one run directory; see the module docstring.

    ``pair`` (a ``ModelPair``) and ``task`` may be given (tests, notebooks);
    otherwise they are loaded from the config (default pair when none is named).
    ``on_event(kind, stage, info)`` receives ``start``/``skip``/``done`` events.
    """

    def __init__(self, config: RunConfig, *, pair: Any | None = None, task: Any | None = None, console: Any | None = None,
                 on_event: Callable[[str, str, dict[str, Any]], None] | None = None):  # fmt: skip
        self.cfg = config
        self.root = config.out
        self.root.mkdir(parents=True, exist_ok=True)
        self.console = console
        self.on_event = on_event
        if task is None:
            from autojudge.plugins.manager import UnknownDatasetError, UnknownTaskError, get_task

            try:
                task = get_task(config.task, dataset=config.dataset)
            except (UnknownTaskError, UnknownDatasetError) as e:
                raise PipelineError(str(e)) from None
        self.task = task
        if pair is None:
            from autojudge.core import presets
            from autojudge.core.models import load_pair

            self._log(f"loading models {config.draft or presets.DEFAULT_DRAFT} -> {config.target or presets.DEFAULT_TARGET}")
            pair = load_pair(
                config.draft or presets.DEFAULT_DRAFT, config.target or presets.DEFAULT_TARGET,
                dtype=config.dtype, device=config.device,
            )  # fmt: skip
        self.pair = pair
        self.state = RunState(self.root)
        self.hashes: dict[str, str] = {}
        self.ran: dict[str, bool] = {}
        self._engine = None

    # -- small helpers ----------------------------------------------------------------------------
    @property
    def mined_dir(self) -> Path:
        return Path(self.cfg.mined) if self.cfg.mined else self.root / "mined"

    @property
    def val_offset(self) -> int:
        """Index of the first validation prompt in the mining split: right after the mined ones."""
        if not self.cfg.mined:
            return self.cfg.mine_limit
        done = MinedStore(self.mined_dir).done_indices()
        return max(done) + 1 if done else 0

    @property
    def judge_path(self) -> Path:
        return self.root / "judge.safetensors"

    @property
    def no_judge_path(self) -> Path:
        """Written instead of the judge when the mined labels hold a single class (the reason inside)."""
        return self.root / "judge.none.json"

    def has_judge(self) -> bool:
        return self.judge_path.is_file() and not self.no_judge_path.is_file()

    @property
    def val_dir(self) -> Path:
        return self.root / "validation"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def _log(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(msg)

    def _models(self) -> dict[str, Any]:
        return {
            "draft": self.pair.draft.fingerprint(),
            "target": self.pair.target.fingerprint(),
            "dtype": str(self.pair.target.dtype).replace("torch.", ""),
        }

    def engine(self):
        if self._engine is None and self.cfg.backend == "vllm":
            from autojudge.core.backends.vllm.engine import PerPromptEngine, VLLMEngine

            c = self.cfg
            dtype = str(self.pair.target.dtype).replace("torch.", "")
            self._engine = PerPromptEngine(VLLMEngine(c.target or self.pair.target.id, c.draft or self.pair.draft.id,
                                                      k=c.k, dtype=dtype), artifact=self.judge_path)  # fmt: skip
        if self._engine is None:
            from autojudge.core.engine import SpeculativeEngine

            self._engine = SpeculativeEngine(self.pair.target.model, self.pair.draft.model, self.pair.tokenizer)
        return self._engine

    def _backend_key(self) -> dict[str, Any]:
        """The backend enters the decoding stages' keys only when it is not the default (old runs stay valid)."""
        return {"backend": self.cfg.backend} if self.cfg.backend != "transformers" else {}

    def _task_info(self) -> dict[str, Any]:
        return {k: v for k, v in self.task.info().items() if k != "description"}

    def _eval_settings(self) -> EvalSettings:
        return EvalSettings(k=self.cfg.k, max_new_tokens=self.cfg.max_new_tokens)

    # -- examples ----------------------------------------------------------------------------------
    def mining_examples(self) -> list[Any]:
        return self.task.load(self.task.mining_split, data_dir=self.cfg.data_dir, limit=self.cfg.mine_limit)

    def validation_examples(self) -> list[Any]:
        c = self.cfg
        offset = self.val_offset
        rows = self.task.load(self.task.mining_split, data_dir=c.data_dir, limit=offset + c.val_limit)
        val = rows[offset:]
        if not val:
            raise PipelineError(
                f"the {self.task.mining_split!r} split has {len(rows)} prompts: none left for validation "
                f"after the {offset} mined ones"
            )
        return val

    def eval_examples(self) -> list[Any]:
        return self.task.load(self.task.eval_split, data_dir=self.cfg.data_dir, limit=self.cfg.eval_limit)

    # -- stage inputs ------------------------------------------------------------------------------
    def stage_inputs(self, stage: str) -> dict[str, Any]:
        c = self.cfg
        common = {"task": self._task_info(), "models": self._models()}
        if stage == "mine":
            if c.mined:
                return {**common, "split": self.task.mining_split, "external": self._external_mined_key()}
            return {**common, "split": self.task.mining_split, "limit": c.mine_limit,
                    "max_new_tokens": c.max_new_tokens, "max_mismatches": c.max_mismatches}  # fmt: skip
        if stage == "train":
            return {"mine": self.hashes["mine"], "features": c.features, "target_recall": c.target_recall}
        if stage == "select":
            return {**common, "train": self.hashes["train"], "val_offset": self.val_offset, "val_limit": c.val_limit,
                    "val_thresholds": sorted(c.val_thresholds), "max_accuracy_drop": c.max_accuracy_drop,
                    **self._eval_settings().as_dict(), **self._backend_key()}  # fmt: skip
        if stage == "evaluate":
            return {**common, "train": self.hashes["train"], "select": self.hashes["select"],
                    "eval_limit": c.eval_limit, "thresholds": sorted(c.thresholds), "top_k": sorted(c.top_k),
                    **self._eval_settings().as_dict(), **self._backend_key()}  # fmt: skip
        if stage == "report":
            return {s: self.hashes[s] for s in STAGES[:-1]}
        raise ValueError(stage)

    # -- driver ------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run (or skip) every stage in order; returns the summary written by the report stage."""
        for stage in STAGES:
            h = stable_hash(self.stage_inputs(stage))
            self.hashes[stage] = h
            rec = self.state.get(stage)
            upstream_ran = any(self.ran.values())  # e.g. rows recomputed on --resume: same hash, new outputs
            if (not upstream_ran and rec and rec.get("status") == "done" and rec.get("hash") == h
                    and self.outputs_ok(stage)):  # fmt: skip
                self.ran[stage] = False
                self._event("skip", stage, {"hash": h})
                continue
            interrupted = bool(rec) and rec.get("status") == "running" and rec.get("hash") == h
            if interrupted and not self.cfg.resume:
                raise PipelineError(
                    f"stage {stage!r} of the run in {self.root} was interrupted; pass --resume to continue it, "
                    "or choose another --out"
                )
            self.state.set(stage, hash=h, status="running", started=_now())
            self._event("start", stage, {"hash": h})
            t0 = time.perf_counter()
            info = getattr(self, f"_run_{stage}")(resume=self.cfg.resume or interrupted)
            secs = time.perf_counter() - t0
            self.state.set(stage, hash=h, status="done", seconds=round(secs, 3), finished=_now(), info=info or {})
            self.ran[stage] = True
            self._event("done", stage, {"hash": h, "seconds": secs})
        return json.loads((self.root / "summary.json").read_text())

    def _event(self, kind: str, stage: str, info: dict[str, Any]) -> None:
        if self.on_event:
            self.on_event(kind, stage, info)
        n = STAGES.index(stage) + 1
        if kind == "skip":
            self._log(f"[dim]stage {n}/{len(STAGES)} {stage}: cached (inputs unchanged), skipped[/]")
        elif kind == "start":
            self._log(f"[bold]stage {n}/{len(STAGES)} {stage}[/]")
        elif kind == "done":
            self._log(f"stage {n}/{len(STAGES)} {stage}: done in {info['seconds']:.1f}s")

    def outputs_ok(self, stage: str) -> bool:
        """Whether a finished stage's outputs are still all there."""
        if stage == "mine" and self.cfg.mined:
            return MinedStore(self.mined_dir).meta_path.is_file()
        if stage == "mine":
            n = len(self.mining_examples())
            return (self.mined_dir / "summary.json").is_file() and MinedStore(self.mined_dir).done_indices() == set(range(n))
        if stage == "train":
            return self.judge_path.is_file() != self.no_judge_path.is_file()
        if stage == "select":
            sel = self.val_dir / "selection.json"
            if not sel.is_file():
                return False
            modes = self._val_modes(json.loads(sel.read_text())["calibrated_threshold"])
            if not modes:
                return True
            return self._rows_complete(self.val_dir, modes, self.validation_examples(), "validation")
        if stage == "evaluate":
            return self._rows_complete(self.eval_dir, self.eval_modes(), self.eval_examples(), "eval")
        if stage == "report":
            return all((self.root / f).is_file() for f in ("summary.json", "report.md"))
        return False

    def _rows_complete(self, d: Path, modes: list[ModeSpec], examples: list[Any], which: str) -> bool:
        base = self._base_key(examples, which)
        sha = file_sha256(self.judge_path) if self.has_judge() else None
        ids = [e.id for e in examples]
        return all(mode_complete(d, m, ids, mode_key(base, m, sha)) for m in modes)

    # -- stages ------------------------------------------------------------------------------------
    def _external_mined_key(self) -> dict[str, Any]:
        """What identifies an external mined directory's content: its meta and its label files."""
        store = MinedStore(self.mined_dir)
        try:
            meta = store.read_meta()
        except MinedStoreError as e:
            raise PipelineError(f"--mined {self.mined_dir}: {e}") from e
        files = sorted(p for sub in (store.shards, store.prompts) if sub.is_dir() for p in sub.iterdir()
                       if not p.name.startswith("."))  # fmt: skip
        return {"meta": {k: v for k, v in meta.items() if k not in ("created", "merged_from")},
                "files": {f"{p.parent.name}/{p.name}": file_sha256(p) for p in files}}  # fmt: skip

    def _check_external_mined(self) -> dict[str, Any]:
        store = MinedStore(self.mined_dir)
        meta = store.read_meta()
        problems = []
        if meta.get("task") != self.task.name:
            problems.append(f"task {meta.get('task')!r}, not {self.task.name!r}")
        dataset = self.task.info().get("dataset")
        if meta.get("dataset") != dataset:
            problems.append(f"dataset {meta.get('dataset')!r}, not {dataset!r}")
        if meta.get("split") != self.task.mining_split:
            problems.append(f"split {meta.get('split')!r}, not the mining split {self.task.mining_split!r}")
        for role in ("draft", "target"):
            mine, ours = meta.get(role) or {}, getattr(self.pair, role).fingerprint()
            if any(mine.get(k) != ours[k] for k in ("config_sha256", "vocab_sha256", "hidden_size")):
                problems.append(f"{role} model {mine.get('id')!r} is not this run's {ours['id']!r}")
        if meta.get("shard"):
            problems.append(f"it is one shard ({meta['shard'][0]}/{meta['shard'][1]}) only: merge the shards with `aj mine-merge`")
        if not store.done_indices():
            problems.append("it has no finished prompt")
        if problems:
            raise PipelineError(f"--mined {self.mined_dir} cannot be used: " + "; ".join(problems))
        return {"summary": store.summary(), "external": str(self.mined_dir)}  # read only: never written to

    def _run_mine(self, resume: bool) -> dict[str, Any]:
        from autojudge.core.mining.run import mine_task
        from autojudge.core.mining.steps import MiningConfig

        c = self.cfg
        if c.mined:
            return self._check_external_mined()
        store = MinedStore(self.mined_dir)
        exists = store.meta_path.is_file()
        if exists and not store.done_indices() <= set(range(c.mine_limit)):
            raise PipelineError(
                f"{self.mined_dir} holds prompts beyond --mine-limit {c.mine_limit}; they would overlap the "
                "validation prompts. Use the original --mine-limit or another --out."
            )
        config = MiningConfig(max_new_tokens=c.max_new_tokens, draft_k=c.k, max_mismatches=c.max_mismatches)
        try:
            # a finished mining of the same settings is extended (e.g. a larger --mine-limit), never redone
            summary = mine_task(
                self.task, self.pair, self.mined_dir, limit=c.mine_limit, data_dir=c.data_dir, config=config,
                resume=exists, progress=c.progress,
            )  # fmt: skip
        except MinedStoreError as e:
            raise PipelineError(f"{e} (the pipeline never deletes mined data: remove {self.mined_dir} yourself)") from e
        return {"summary": summary}

    def _run_train(self, resume: bool) -> dict[str, Any]:
        from autojudge.judges.dataset import (
            MinedDataError,
            expand_feature_sets,
            load_mined,
            parse_feature_set,
        )
        from autojudge.judges.train import TrainConfig, train_judges

        sets = expand_feature_sets(self.cfg.features)
        blocks = sorted({b for s in sets for b in parse_feature_set(s)} | {"x"})
        import numpy as np

        for stale in (self.judge_path, self.no_judge_path):
            stale.unlink(missing_ok=True)
        if not MinedStore(self.mined_dir).label_rows():
            return self._no_judge("mining found no draft/target mismatch to learn from")
        try:
            # an external directory may hold a prompt a running `aj mine` is writing: read finished ones only
            data = load_mined(self.mined_dir, blocks, skip_incomplete=bool(self.cfg.mined))
        except MinedDataError as e:
            raise PipelineError(f"reading the mined data failed: {e}") from e
        classes = set(np.unique(data.labels).tolist())
        if len(classes) < 2:
            kind = "important" if classes == {1} else "unimportant"
            return self._no_judge(f"all {data.n} mined mismatches are {kind}: a judge needs both classes")
        try:
            # few mined prompts (the CPU defaults) may allow no held-out split with both classes: train
            # in-sample then (flagged); the threshold is still chosen by decoding held-out validation prompts
            result = train_judges(data, sets, TrainConfig(target_recall=self.cfg.target_recall, in_sample_fallback=True))
        except (MinedDataError, ValueError) as e:
            raise PipelineError(
                f"training the judge failed: {e}. Mine more prompts (--mine-limit) so that both important "
                "and unimportant mismatches appear in the judge's training and validation prompts."
            ) from e
        result.save(self.judge_path)
        if not result.split["held_out"]:
            self._log(f"[yellow]judge: {result.split['note']}[/]")
        b = result.best
        return {"chosen": result.chosen, "threshold": result.threshold, "val_auc": b.val_auc, "train_auc": b.train_auc,
                "n_labels": data.n, "split": result.split, "at_threshold": result.at_threshold}  # fmt: skip

    def _no_judge(self, reason: str) -> dict[str, Any]:
        """No judge can be trained: the run goes on with target-only, lossless SD and Top-K, and says why."""
        reason += "; the run continues without a judge (lossless SD is recommended): mine more prompts (--mine-limit, --max-mismatches)"
        atomic_write_json(self.no_judge_path, {"judge": None, "reason": reason})
        self._log(f"[yellow]judge: {reason}[/]")
        return {"judge": None, "reason": reason}

    def calibrated_threshold(self) -> float | None:
        """The judge's recall-calibrated threshold; None when no judge could be trained."""
        from autojudge.judges.artifact import read_judge_metadata

        if not self.has_judge():
            return None
        return float(read_judge_metadata(self.judge_path)["threshold"])

    def _val_modes(self, calibrated: float | None) -> list[ModeSpec]:
        if calibrated is None:  # no judge: nothing to choose, nothing decoded
            return []
        return build_modes([*self.cfg.val_thresholds, calibrated], sd=False)

    def _base_key(self, examples: list[Any], which: str) -> dict[str, Any]:
        return {"which": which, "task": self._task_info(), "ids": [e.id for e in examples],
                "models": self._models(), **self._eval_settings().as_dict(), **self._backend_key()}  # fmt: skip

    def _decode(self, which: str, d: Path, modes: list[ModeSpec], examples: list[Any], resume: bool):
        judges = {m.name: make_judge(m, self.judge_path, self.pair, self.cfg.device) for m in modes}
        sha = file_sha256(self.judge_path) if self.has_judge() else None
        with _progress(self.cfg.progress, which, len(examples) * len(modes)) as update:
            return evaluate_modes(
                self.task, self.engine(), examples, modes, d, settings=self._eval_settings(), judges=judges,
                base_key=self._base_key(examples, which), judge_sha256=sha, resume=resume, progress=update,
            )  # fmt: skip

    def _run_select(self, resume: bool) -> dict[str, Any]:
        calibrated = self.calibrated_threshold()
        modes = self._val_modes(calibrated)
        examples = self.validation_examples()
        if calibrated is None:  # no judge: nothing to choose, lossless is recommended without decoding
            aggs: dict[str, Any] = {}
            sel = {"reference_accuracy": None, "max_accuracy_drop_points": self.cfg.max_accuracy_drop, "candidates": [],
                   "recommended_threshold": 0.0, "recommended_mode": "sd", "within_budget": False}  # fmt: skip
        else:
            rows = self._decode("validation", self.val_dir, modes, examples, resume)
            aggs = aggregate_modes(rows, modes)
            sel = select_threshold(aggs, self.cfg.max_accuracy_drop)
        sel.update({
            "calibrated_threshold": calibrated,
            "prompt_ids": [e.id for e in examples],
            "split": self.task.mining_split,
            "modes": aggs,
        })  # fmt: skip
        atomic_write_json(self.val_dir / "selection.json", sel)
        return {"recommended_threshold": sel["recommended_threshold"], "reference_accuracy": sel["reference_accuracy"]}

    def selection(self) -> dict[str, Any]:
        return json.loads((self.val_dir / "selection.json").read_text())

    def eval_modes(self) -> list[ModeSpec]:
        sel = self.selection()
        if sel["calibrated_threshold"] is None:  # no judge
            return build_modes([], self.cfg.top_k)
        ts = [*self.cfg.thresholds, sel["calibrated_threshold"]]
        if sel["recommended_threshold"] > 0:  # 0 is lossless: the `sd` mode already measures it
            ts.append(sel["recommended_threshold"])
        return build_modes(ts, self.cfg.top_k)

    def _run_evaluate(self, resume: bool) -> dict[str, Any]:
        modes = self.eval_modes()
        examples = self.eval_examples()
        rows = self._decode("eval", self.eval_dir, modes, examples, resume)
        return {"modes": [m.name for m in modes], "n": len(examples), "rows": sum(len(r) for r in rows.values())}

    def _run_report(self, resume: bool) -> dict[str, Any]:
        from autojudge.core.run.evaluate import load_mode_rows
        from autojudge.core.run.report import write_report

        modes = self.eval_modes()
        rows = {m.name: load_mode_rows(self.eval_dir, m) for m in modes}
        aggs = aggregate_modes(rows, modes)
        sel = self.selection()
        train_info = (self.state.get("train") or {}).get("info", {})
        mined = (self.state.get("mine") or {}).get("info", {}).get("summary") or MinedStore(self.mined_dir).summary()
        stages = {s: {k: v for k, v in (self.state.get(s) or {}).items() if k in ("seconds", "finished", "hash")}
                  for s in STAGES[:-1]}  # fmt: skip
        summary = {
            "format": "autojudge-run/1",
            "task": self.task.name,
            "metric": self.task.info().get("metric", "accuracy"),  # e.g. pass@1 for the code tasks
            "draft": self.pair.draft.fingerprint(),
            "target": self.pair.target.fingerprint(),
            "dtype": str(self.pair.target.dtype).replace("torch.", ""),
            "settings": self.cfg.settings(),
            "eval_split": self.task.eval_split,
            "eval_prompt_ids": [r["prompt_id"] for r in rows[modes[0].name]],
            "recommended_threshold": sel["recommended_threshold"],
            "recommended_mode": sel["recommended_mode"],
            "calibrated_threshold": sel["calibrated_threshold"],
            "validation": {k: v for k, v in sel.items() if k != "modes"},
            "mining": mined,
            "training": train_info,
            "modes": aggs,
            "mode_order": [m.name for m in modes],
            "samples": {m.name: str(Path("eval") / f"{m.file_stem}.jsonl") for m in modes},
            "stages": stages,
        }
        write_report(self.root, summary)
        return {"modes": len(modes)}


def select_threshold(val_aggs: dict[str, dict[str, Any]], max_drop_points: float) -> dict[str, Any]:
    """Pick the recommended threshold from VALIDATION aggregates (``ar`` + ``judge@T`` modes).

    The most aggressive threshold whose accuracy is within ``max_drop_points`` of
    target-only; 0.0 (lossless) when none is.
    """
    from autojudge.judges.calibrate import pick_threshold_within_budget

    if "ar" not in val_aggs:
        raise ValueError("validation needs the target-only ('ar') mode as the reference")
    ref = val_aggs["ar"]["accuracy"]
    cands = {a["threshold"]: a["accuracy"] for a in val_aggs.values() if a["kind"] == "judge"}
    pick = pick_threshold_within_budget(cands, ref, max_drop_points / 100.0)
    return {
        "reference_accuracy": ref,
        "max_accuracy_drop_points": max_drop_points,
        "candidates": [
            {"threshold": t, "accuracy": acc, "delta_points": 100.0 * (acc - ref),
             "within_budget": acc >= ref - max_drop_points / 100.0 - 1e-12}
            for t, acc in sorted(cands.items())
        ],  # fmt: skip
        "recommended_threshold": 0.0 if pick is None else pick,
        "recommended_mode": "sd" if not pick else ModeSpec("judge", threshold=pick).name,
        "within_budget": pick is not None,
    }


def run_pipeline(config: RunConfig, **kwargs: Any) -> dict[str, Any]:
    """Build a :class:`Pipeline` and run it; returns ``summary.json``'s content."""
    return Pipeline(config, **kwargs).run()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _progress:
    """A rich progress bar (items, elapsed, ETA) for one decoding stage; a no-op when disabled."""

    def __init__(self, enabled: bool, name: str, total: int):
        self.enabled, self.name, self.total = enabled, name, total
        self.bar = None

    def __enter__(self) -> Callable[[int, int, str], None]:
        if not self.enabled:
            return lambda done, total, mode: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )  # fmt: skip

        self.bar = Progress(
            TextColumn(f"[bold]{self.name}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples | {task.fields[mode]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
        )  # fmt: skip
        self.bar.__enter__()
        job = self.bar.add_task(self.name, total=self.total, mode="")

        def update(done: int, total: int, mode: str) -> None:
            if not mode:  # rows found on disk: not progress made now, keep them out of the ETA
                self.bar.reset(job, completed=done, total=total, mode="")
            else:
                self.bar.update(job, completed=done, total=total, mode=mode)

        return update

    def __exit__(self, *exc: Any) -> bool:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
