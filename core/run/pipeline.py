"""``aj run``: mine -> train -> select the threshold on validation -> evaluate -> report, cached per stage.

This module is the loop (:class:`Pipeline`), its settings (:class:`RunConfig`) and its
record (:class:`RunState`, ``OUT/state.json``). Each stage is a class of
:mod:`autojudge.core.run.stages` (how to add one: its docstring); the progress output is
:mod:`autojudge.core.run.progress`, the content of ``summary.json``
:func:`autojudge.core.run.report.build_summary`. Stages and their outputs in ``OUT``:

1. ``mine``: :func:`autojudge.core.mining.run.mine_task` on the first ``mine_limit``
   prompts of the task's mining split -> ``OUT/mined``. With ``mined`` (``--mined DIR``)
   an existing ``aj mine`` / ``aj mine-merge`` directory is used instead, after checking
   that its task, split and models are this run's; validation then starts after the
   last prompt it mined. By default (``judge="auto"``, :func:`~autojudge.core.run.stages.auto_judge`) the
   judge shipped for the task (``Task.shipped_judge``), when it was trained for the loaded pair,
   replaces mining and training; ``judge="mine"`` always mines.
2. ``train``: :func:`autojudge.judges.train.train_judges` -> ``OUT/judge.safetensors``
   (+ ``judge.report.json``); its recall-calibrated threshold is a candidate below.
   When the mined labels hold one class only (or none), ``OUT/judge.none.json`` says
   why and the run goes on without a judge.
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
(``running``/``done``/``failed``), the seconds it took and the run's sitting id. A
stage whose hash is unchanged, that finished, whose outputs check out and none of
whose upstream stages ran in this invocation is skipped. A stage that raised is
recorded ``failed`` (with the error) and a plain re-run starts it again (mining keeps
its finished prompts: the store resumes per prompt whenever it exists). A stage left
``running`` (interrupted: the process was killed) needs ``resume=True``
(``--resume``): mining continues through ``mine_task(resume=True)``, evaluation per
sample from the JSONL rows. Decoded rows are cached per mode, so adding a threshold
decodes only the new mode; each records the sitting (:attr:`Pipeline.sitting`) that
decoded it, and the report flags speed-ups across sittings.

Checks that need no model (:meth:`Pipeline.check_before_models`: the data files of
both splits, the ``--mined`` directory's meta) run before the models load.

Limits: one process. Every decode is of one prompt (batch size 1): the ``mine``
stage keeps up to ``MiningConfig.inflight`` (4) prompts in flight, each on its own
transformers engine, with the equivalence checks in a background thread, and uses
transformers even with ``backend="vllm"``; ``select`` and ``evaluate`` decode one
example and one mode at a time, on transformers or, with ``backend="vllm"``, through
vLLM one request at a time (whose prefix cache favours the later modes' tokens/s:
:mod:`autojudge.core.run.evaluate`). Mined data is never deleted by the pipeline
(changing mining settings needs a new ``OUT``); the validation and eval sets are
tiny by default (CPU budget), so accuracies carry large error bars.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autojudge.core.backends import check_backend
from autojudge.core.files import atomic_write_json
from autojudge.core.quant import QUANT_CHOICES
from autojudge.core.run.errors import PipelineError
from autojudge.core.run.evaluate import EvalSettings, new_sitting, stable_hash
from autojudge.core.run.progress import stage_message
from autojudge.core.run.report import read_summary
from autojudge.core.run.stages import (
    DEFAULT_STAGES,
    Stage,
    auto_judge,
    given_judge_path,
    mined_dir_problems,
    select_threshold,
)

STATE_FORMAT = "autojudge-run-state/1"
#: ``RunConfig.judge`` values: use the task's shipped judge when it fits the models, else mine; always mine
JUDGE_AUTO, JUDGE_MINE = "auto", "mine"
#: the stage names in order (the keys of ``state.json``); the stages themselves: :data:`DEFAULT_STAGES`
STAGES: tuple[str, ...] = tuple(s.name for s in DEFAULT_STAGES)

__all__ = [
    "JUDGE_AUTO",
    "JUDGE_MINE",
    "STAGES",
    "Pipeline",
    "PipelineError",
    "RunConfig",
    "RunState",
    "run_pipeline",
    "select_threshold",
]


@dataclass
class RunConfig:
    """Everything ``aj run`` takes. Accuracy budgets are in points (1.0 = one percentage point)."""

    task: str
    out: Path
    dataset: str | None = (
        None  # for tasks offering datasets (``--dataset``, e.g. ``code``); None: the default
    )
    draft: str | None = None
    target: str | None = None
    # defaults sized for a 2-core CPU (docs/run.md, "Defaults and their cost"): a demonstration of
    # the pipeline on a handful of prompts, not an accuracy measurement
    mine_limit: int = 2
    val_limit: int = 1  # 0: no validation decode, the judge's calibrated threshold is recommended unchecked
    eval_limit: int = 20
    eval_split: str | None = (
        None  # None: the task's eval split (e.g. ``test`` for all 164 HumanEval problems)
    )
    thresholds: tuple[float, ...] = ()
    val_thresholds: tuple[float, ...] = ()
    top_k: tuple[int, ...] = (4,)
    max_accuracy_drop: float = 1.0
    max_new_tokens: int = 512  # as `aj mine`; GSM8K answers of the 1.5B target run to 300-450 tokens
    k: int = 5
    dtype: str | None = None
    quant: str = "none"  # "int8": int8 weight-only linears in both models (core/quant.py)
    device: str = "cpu"
    backend: str = "transformers"  # decoding backend of the select/evaluate stages: transformers or vllm
    features: str = "dd+dt"
    target_recall: float = 0.9
    max_mismatches: int | None = 3
    mined: Path | None = None  # an existing mined directory instead of the mine stage
    # the judge: JUDGE_AUTO (the task's shipped judge when it fits the models, else mine and train),
    # JUDGE_MINE / None (mine and train), or a trained judge instead of mining and training: a shipped
    # judge's name (``aj judges list``) or an artifact path; its threshold is still chosen on validation
    judge: str | None = "auto"
    # train on labels whose rollout hit the token budget too (default: left out, see docs/mining.md)
    keep_truncated: bool = False
    data_dir: Path | None = None
    resume: bool = False
    progress: bool = True
    # examples decoded at once per mode in select/evaluate (transformers backend: BatchedEngine;
    # 1 = one at a time). Rows are identical for every value in float32 (bfloat16: equal up to
    # near-ties, see docs/run.md), so it is not part of the cache key.
    eval_batch: int = 50
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("mine_limit", "eval_limit", "max_new_tokens", "k", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.val_limit < 0:
            raise ValueError("val_limit must be >= 0")
        if self.mine_limit < 2:
            raise ValueError("mine_limit must be >= 2: the judge's validation split is by prompt")
        if any(not 0.0 <= t <= 1.0 for t in (*self.thresholds, *self.val_thresholds)):
            raise ValueError("thresholds must be in [0, 1]")
        if any(k < 1 for k in self.top_k):
            raise ValueError("top-K values must be >= 1")
        if self.judge == JUDGE_MINE or (self.judge == JUDGE_AUTO and self.mined is not None):
            self.judge = None  # mine (or read --mined) and train
        if self.judge not in (None, JUDGE_AUTO) and self.mined is not None:
            raise ValueError("--judge skips mining and training: it cannot be combined with --mined")
        if self.max_accuracy_drop < 0:
            raise ValueError("max_accuracy_drop must be >= 0 (points)")
        check_backend(self.backend)
        self.quant = (self.quant or "none").lower()
        if self.quant not in QUANT_CHOICES:
            raise ValueError(f"quant must be one of {', '.join(QUANT_CHOICES)}, got {self.quant!r}")
        if self.quant != "none" and self.backend == "vllm":
            raise ValueError(
                "--quant int8 quantizes the transformers models; --backend vllm would decode float weights"
            )
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
    ``stages`` (default :data:`DEFAULT_STAGES`) are run in order by :meth:`run`; the
    pipeline is also what they are given: config, task, pair, paths, engine, console.
    """

    def __init__(self, config: RunConfig, *, pair: Any | None = None, task: Any | None = None, console: Any | None = None,
                 on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
                 stages: Sequence[Stage] = DEFAULT_STAGES):  # fmt: skip
        self.cfg = config
        self.root = config.out
        self.sitting = new_sitting()  # recorded in every decoded row and stage record of this run
        self.console = console
        self.on_event = on_event
        self.stages = tuple(stages)
        if len({s.name for s in self.stages}) != len(self.stages):
            raise ValueError(f"stage names must be unique: {[s.name for s in self.stages]}")
        if task is None:
            from autojudge.plugins.manager import UnknownDatasetError, UnknownTaskError, get_task

            try:
                task = get_task(config.task, dataset=config.dataset)
            except (UnknownTaskError, UnknownDatasetError) as e:
                raise PipelineError(str(e)) from None
        self.task = task
        self.check_before_models()  # what needs no model fails here, before seconds of model loading
        if pair is None:
            from autojudge.core import presets
            from autojudge.core.models import load_pair

            self.log(
                f"loading models {config.draft or presets.DEFAULT_DRAFT} -> {config.target or presets.DEFAULT_TARGET}"
            )
            pair = load_pair(
                config.draft or presets.DEFAULT_DRAFT, config.target or presets.DEFAULT_TARGET,
                dtype=config.dtype, device=config.device, quant=config.quant,
            )  # fmt: skip
        self.pair = pair
        if config.judge == JUDGE_AUTO:
            # a shipped judge's name, or None: mine and train (vLLM cannot compute the draft's hidden states)
            config.judge, note = auto_judge(task, pair, draft_hidden=config.backend != "vllm")
            self.log(f"judge: {note}" if config.judge else f"[yellow]judge: {note}[/]")
        self._created_root = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        self.state = RunState(self.root)
        self.hashes: dict[str, str] = {}
        self.ran: dict[str, bool] = {}
        self._engine = None
        self._batched_engine = None

    def check_before_models(self) -> None:
        """The checks that need no model: the data sets' files, the ``--mined`` directory's meta.

        Raises :class:`PipelineError` saying what to change; run before the models load.
        """
        from autojudge.core.data import DatasetNotFoundError

        # one example of each split (validation reads the mining split too, even with --mined)
        for split in dict.fromkeys((self.task.mining_split, self.eval_split)):
            try:
                self.task.load(split, data_dir=self.cfg.data_dir, limit=1)
            except DatasetNotFoundError as e:
                raise PipelineError(str(e)) from None
            except ValueError as e:  # no such split (e.g. a mistyped --eval-split)
                raise PipelineError(f"split {split!r} of task {self.task.name!r}: {e}") from None
        if self.cfg.mined:
            problems = mined_dir_problems(self.task, Path(self.cfg.mined))
            if problems:
                raise PipelineError(f"--mined {self.cfg.mined} cannot be used: " + "; ".join(problems))
        if self.cfg.judge and self.cfg.judge != JUDGE_AUTO:  # auto is resolved once the models load
            from autojudge.judges.artifact import JudgeArtifactError, read_judge_metadata

            try:  # the name resolves and the file reads; the fingerprints are checked once the models load
                read_judge_metadata(given_judge_path(self))
            except JudgeArtifactError as e:
                raise PipelineError(f"--judge {self.cfg.judge}: {e}") from None

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run (or skip) every stage in order; returns the summary written by the report stage.

        A run directory this pipeline created and that holds nothing but ``state.json`` when a stage
        fails is removed again (nothing in it to resume or to read).
        """
        try:
            return self._run()
        except Exception:
            if self._created_root and {f.name for f in self.root.iterdir()} <= {"state.json"}:
                self.state.path.unlink(missing_ok=True)
                self.root.rmdir()
            raise

    def _run(self) -> dict[str, Any]:
        for stage in self.stages:
            name = stage.name
            h = stable_hash(stage.inputs(self))
            self.hashes[name] = h
            rec = self.state.get(name)
            upstream_ran = any(self.ran.values())  # e.g. rows recomputed on --resume: same hash, new outputs
            if (not upstream_ran and rec and rec.get("status") == "done" and rec.get("hash") == h
                    and stage.outputs_ok(self)):  # fmt: skip
                self.ran[name] = False
                self._event("skip", name, {"hash": h})
                continue
            interrupted = bool(rec) and rec.get("status") == "running" and rec.get("hash") == h
            if interrupted and not self.cfg.resume:
                raise PipelineError(
                    f"stage {name!r} of the run in {self.root} was interrupted; pass --resume to continue it, "
                    "or choose another --out"
                )
            # a stage that FAILED (an exception, recorded below) is started again by a plain re-run, like one
            # that never ran: mining keeps its finished prompts anyway (the store's per-prompt markers)
            self.state.set(name, hash=h, status="running", started=_now(), sitting=self.sitting)
            self._event("start", name, {"hash": h})
            t0 = time.perf_counter()
            try:
                info = stage.run(self, resume=self.cfg.resume or interrupted)
            except Exception as e:  # KeyboardInterrupt / SystemExit leave it "running": interrupted
                self.state.set(
                    name, hash=h, status="failed", seconds=round(time.perf_counter() - t0, 3), finished=_now(),
                    error=f"{type(e).__name__}: {e}", sitting=self.sitting,
                )  # fmt: skip
                raise
            secs = time.perf_counter() - t0
            self.state.set(
                name, hash=h, status="done", seconds=round(secs, 3), finished=_now(), info=info or {},
                sitting=self.sitting,
            )  # fmt: skip
            self.ran[name] = True
            self._event("done", name, {"hash": h, "seconds": secs})
        return read_summary(self.root)

    def upstream(self, stage: str) -> list[str]:
        """The names of the stages that run before ``stage``."""
        names = [s.name for s in self.stages]
        return names[: names.index(stage)]

    def _event(self, kind: str, stage: str, info: dict[str, Any]) -> None:
        if self.on_event:
            self.on_event(kind, stage, info)
        names = [s.name for s in self.stages]
        msg = stage_message(kind, stage, names.index(stage) + 1, len(names), info)
        if msg is not None:
            self.log(msg)

    # -- what the stages share ---------------------------------------------------------------------
    @property
    def mined_dir(self) -> Path:
        return Path(self.cfg.mined) if self.cfg.mined else self.root / "mined"

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

    def log(self, msg: str) -> None:
        """Print ``msg`` (rich markup) on the console, if the pipeline was given one."""
        if self.console is not None:
            self.console.print(msg)

    def dtype_name(self) -> str:
        return str(self.pair.target.dtype).replace("torch.", "")

    def quant_name(self) -> str:
        """The pair's ``--quant`` ("none" or "int8")."""
        return getattr(self.pair.target, "quant", "none")

    def models_key(self) -> dict[str, Any]:
        """The models as stage inputs: both fingerprints (with their ids), the dtype, and ``quant``
        only when not "none" (so run directories from before ``--quant`` keep their hashes)."""
        quant = self.quant_name()
        return {
            "draft": self.pair.draft.fingerprint(),
            "target": self.pair.target.fingerprint(),
            "dtype": self.dtype_name(),
            **({"quant": quant} if quant != "none" else {}),
        }

    def engine(self):
        if self._engine is None:
            from autojudge.core.backends import open_engine

            pair = self.pair  # vLLM loads the pair's directories in the pair's dtype
            self._engine = open_engine(
                self.cfg.backend, pair.target, pair.draft, tokenizer=pair.tokenizer, k=self.cfg.k
            )
        return self._engine

    def batched_engine(self):
        """The :class:`~autojudge.core.batched.BatchedEngine` of the pair for ``eval_batch > 1`` on
        transformers; None for batch 1 or vLLM (those decode one example at a time)."""
        if self.cfg.eval_batch <= 1 or self.cfg.backend != "transformers":
            return None
        if self._batched_engine is None:
            from autojudge.core.batched import BatchedEngine

            pair = self.pair
            self._batched_engine = BatchedEngine(pair.target.model, pair.draft.model, pair.tokenizer)
        return self._batched_engine

    def backend_key(self) -> dict[str, Any]:
        """The backend enters the decoding stages' keys only when it is not the default (old runs stay valid)."""
        return {"backend": self.cfg.backend} if self.cfg.backend != "transformers" else {}

    @property
    def eval_split(self) -> str:
        """The split evaluated: ``--eval-split``, else the task's own."""
        return self.cfg.eval_split or self.task.eval_split

    def task_info(self) -> dict[str, Any]:
        return {k: v for k, v in self.task.info().items() if k != "description"}

    def eval_settings(self) -> EvalSettings:
        return EvalSettings(k=self.cfg.k, max_new_tokens=self.cfg.max_new_tokens)


def run_pipeline(config: RunConfig, **kwargs: Any) -> dict[str, Any]:
    """Build a :class:`Pipeline` and run it; returns ``summary.json``'s content."""
    return Pipeline(config, **kwargs).run()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
