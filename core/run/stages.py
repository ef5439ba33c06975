"""The stages of ``aj run``, one class each; :data:`DEFAULT_STAGES` is their order.

A stage (:class:`Stage`) declares three things; the loop of
:meth:`autojudge.core.run.pipeline.Pipeline.run` does the rest once for all stages (the
hash, ``state.json``, skipping, ``--resume``, re-running everything after a stage that ran):

* ``inputs(p)``: a JSON-able dict whose :func:`~autojudge.core.run.evaluate.stable_hash` is
  the stage's cache key; earlier stages enter through their hashes (``p.hashes[name]``).
  Existing run directories stay cached only while these dicts hash as before: a new setting
  enters only when it differs from the old behaviour (as :meth:`Pipeline.backend_key` does).
* ``outputs_ok(p)``: whether a finished stage's outputs are still all there (a stage whose
  hash matches but whose files are gone runs again).
* ``run(p, resume)``: do the work; the returned dict is recorded as the stage's ``info`` in
  ``state.json`` (the report reads those of ``mine`` and ``train``). ``resume`` is true with
  ``--resume`` and when this stage was interrupted.

``p`` is the :class:`~autojudge.core.run.pipeline.Pipeline`: ``p.cfg`` (the
:class:`~autojudge.core.run.pipeline.RunConfig`), the task, the model pair, the paths of the
run directory, the decoding engine and the console.

Adding a stage: subclass :class:`Stage` (or :class:`DecodingStage` for one that decodes
examples in several modes, with rows cached per mode), give it a ``name`` and the three
methods, and insert an instance into :data:`DEFAULT_STAGES` at its place; every later stage
that reads its outputs takes ``p.hashes[<name>]`` into its inputs (the ``report`` stage
takes all earlier hashes by itself, so adding one before it re-runs it once in existing
run directories). A setting the stage needs is a new
:class:`~autojudge.core.run.pipeline.RunConfig` field (and an
``aj run`` option in ``cli/run_cmd.py``); what the report should show goes through
:func:`~autojudge.core.run.report.build_summary`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from autojudge.core.files import atomic_write_json
from autojudge.core.fingerprint import same_model
from autojudge.core.mining.store import MinedDataError, MinedStore
from autojudge.core.run.errors import PipelineError
from autojudge.core.run.evaluate import (
    ModeSpec,
    aggregate_modes,
    build_modes,
    evaluate_modes,
    file_sha256,
    load_mode_rows,
    make_judge,
    mode_complete,
    mode_key,
)
from autojudge.core.run.progress import DecodeProgress
from autojudge.core.run.report import SUMMARY_FILE, build_summary, write_report

if TYPE_CHECKING:
    from autojudge.core.run.pipeline import Pipeline

SELECTION_FILE = "selection.json"


class Stage(ABC):
    """One stage of ``aj run`` (module docstring). ``name`` keys ``state.json`` and later stages' inputs."""

    name: ClassVar[str]

    @abstractmethod
    def inputs(self, p: Pipeline) -> dict[str, Any]:
        """What the stage's cache hash is computed from."""

    @abstractmethod
    def outputs_ok(self, p: Pipeline) -> bool:
        """Whether a finished stage's outputs are still all there."""

    @abstractmethod
    def run(self, p: Pipeline, resume: bool) -> dict[str, Any]:
        """Do the stage's work; returns its ``info`` for ``state.json``."""


def _common(p: Pipeline) -> dict[str, Any]:
    """Inputs of every stage that reads the task or decodes: the task and the models."""
    return {"task": p.task_info(), "models": p.models_key()}


# -- 1. mine ----------------------------------------------------------------------------------------


class MineStage(Stage):
    """Label the first ``mine_limit`` prompts of the mining split into ``OUT/mined``, or check ``--mined DIR``."""

    name = "mine"

    def inputs(self, p: Pipeline) -> dict[str, Any]:
        c = p.cfg
        if c.judge:
            return {**_common(p), "given_judge": judge_file_key(p)}
        if c.mined:
            return {**_common(p), "split": p.task.mining_split, "external": self._external_key(p)}
        return {**_common(p), "split": p.task.mining_split, "limit": c.mine_limit,
                "max_new_tokens": c.max_new_tokens, "max_mismatches": c.max_mismatches}  # fmt: skip

    def outputs_ok(self, p: Pipeline) -> bool:
        if p.cfg.judge:
            return True
        store = MinedStore(p.mined_dir)
        if p.cfg.mined:
            return store.meta_path.is_file()
        n = len(p.task.load(p.task.mining_split, data_dir=p.cfg.data_dir, limit=p.cfg.mine_limit))
        return (p.mined_dir / "summary.json").is_file() and store.done_indices() == set(range(n))

    def run(self, p: Pipeline, resume: bool) -> dict[str, Any]:
        from autojudge.core.mining.run import mine_task
        from autojudge.core.mining.steps import MiningConfig

        c = p.cfg
        if c.judge:
            return {"skipped": f"judge given (--judge {c.judge}): no mining in this run"}
        if c.mined:
            return self._check_external(p)
        store = MinedStore(p.mined_dir)
        exists = store.meta_path.is_file()
        if exists and not store.done_indices() <= set(range(c.mine_limit)):
            raise PipelineError(
                f"{p.mined_dir} holds prompts beyond --mine-limit {c.mine_limit}; they would overlap the "
                "validation prompts. Use the original --mine-limit or another --out."
            )
        from autojudge.core.mining.batched import default_inflight

        # the batched driver: every prompt of the (small) mining set in flight, as memory allows
        inflight = min(
            default_inflight(p.pair.target.model, p.pair.draft.model, c.max_new_tokens), c.mine_limit
        )
        config = MiningConfig(
            max_new_tokens=c.max_new_tokens,
            draft_k=c.k,
            max_mismatches=c.max_mismatches,
            inflight=max(inflight, 1),
        )
        try:
            # a finished mining of the same settings is extended (e.g. a larger --mine-limit), never redone
            summary = mine_task(
                p.task, p.pair, p.mined_dir, limit=c.mine_limit, data_dir=c.data_dir, config=config,
                resume=exists, progress=c.progress,
            )  # fmt: skip
        except MinedDataError as e:
            raise PipelineError(
                f"{e} (the pipeline never deletes mined data: remove {p.mined_dir} yourself)"
            ) from e
        return {"summary": summary}

    @staticmethod
    def _external_key(p: Pipeline) -> dict[str, Any]:
        """What identifies an external mined directory's content: its meta and its label files."""
        store = MinedStore(p.mined_dir)
        try:
            meta = store.read_meta()
        except MinedDataError as e:
            raise PipelineError(f"--mined {p.mined_dir}: {e}") from e
        files = sorted(f for sub in (store.shards, store.prompts) if sub.is_dir() for f in sub.iterdir()
                       if not f.name.startswith("."))  # fmt: skip
        return {"meta": {k: v for k, v in meta.items() if k not in ("created", "merged_from")},
                "files": {f"{f.parent.name}/{f.name}": file_sha256(f) for f in files}}  # fmt: skip

    @staticmethod
    def _check_external(p: Pipeline) -> dict[str, Any]:
        store = MinedStore(p.mined_dir)
        meta = store.read_meta()
        problems = mined_dir_problems(p.task, p.mined_dir)
        for role in ("draft", "target"):
            mined, ours = meta.get(role) or {}, getattr(p.pair, role).fingerprint()
            if not same_model(mined, ours):
                problems.append(f"{role} model {mined.get('id')!r} is not this run's {ours['id']!r}")
        if problems:
            raise PipelineError(f"--mined {p.mined_dir} cannot be used: " + "; ".join(problems))
        return {"summary": store.summary(), "external": str(p.mined_dir)}  # read only: never written to


def given_judge_path(p: Pipeline) -> Path:
    """The artifact ``--judge`` names (an existing file, else a shipped judge), or a PipelineError."""
    from autojudge.judges.shipped import shipped_names
    from autojudge.judges.spec import artifact_path

    spec = str(p.cfg.judge)
    path = artifact_path(spec)
    if path is None:  # baselines are no judge to run without mining: the message names only what works here
        raise PipelineError(
            f"--judge {spec!r} is neither a judge artifact file nor a shipped judge "
            f"(shipped: {', '.join(shipped_names()) or 'none'}; `aj judges list`)"
        )
    return path


def auto_judge(task: Any, pair: Any, *, draft_hidden: bool = True) -> tuple[str | None, str]:
    """``--judge auto``: the name of ``task``'s shipped judge (``Task.shipped_judge``) when it is installed
    and was trained for ``pair`` (both fingerprints), else None (mine and train); and a line saying which.

    A shipped judge that is unreadable or fits other models is not an error here: the run mines instead
    and the line says why (``--judge NAME`` insists, and fails with the reason). ``draft_hidden=False``
    (a backend that cannot compute the draft's hidden states: vLLM) passes over a judge that reads them.
    """
    from autojudge.judges.artifact import JudgeArtifactError, load_judge
    from autojudge.judges.shipped import find_shipped

    name = getattr(task, "shipped_judge", None)
    if not name:
        return None, f"no judge is shipped for task {task.name!r}: mining and training one in this run"
    try:
        shipped = find_shipped(name)
        if shipped is None:
            return None, f"the shipped judge {name!r} is not installed: mining and training one in this run"
        load_judge(shipped.path, target_fingerprint=pair.target.fingerprint(),
                   draft_fingerprint=pair.draft.fingerprint())  # fmt: skip
    except JudgeArtifactError as e:
        return (
            None,
            f"the shipped judge {name!r} does not fit this run ({e}): mining and training one in this run",
        )
    if not draft_hidden and "dd" in (shipped.meta.get("blocks") or []):
        return None, (
            f"the shipped judge {name!r} reads the draft's hidden states ({shipped.feature_set}), which this backend "
            "cannot compute: mining and training one in this run"
        )
    return name, (
        f"using the shipped judge {name!r} ({shipped.labels or '?'} labels, task {shipped.task}); nothing is mined "
        "in this run (--judge mine to mine and train instead)"
    )


def judge_file_key(p: Pipeline) -> dict[str, Any]:
    path = given_judge_path(p)
    return {"spec": str(p.cfg.judge), "sha256": file_sha256(path)}


def mined_dir_problems(task: Any, mined_dir: Path) -> list[str]:
    """What makes ``--mined DIR`` unusable for ``task``, without the models (they are checked later).

    Read by :meth:`Pipeline.check_before_models` before the models load, and again by the stage.
    """
    store = MinedStore(mined_dir)
    try:
        meta = store.read_meta()
    except MinedDataError as e:
        return [str(e)]
    problems = []
    if meta.get("task") != task.name:
        problems.append(f"task {meta.get('task')!r}, not {task.name!r}")
    dataset = task.info().get("dataset")
    if meta.get("dataset") != dataset:
        problems.append(f"dataset {meta.get('dataset')!r}, not {dataset!r}")
    if meta.get("split") != task.mining_split:
        problems.append(f"split {meta.get('split')!r}, not the mining split {task.mining_split!r}")
    if meta.get("shard"):
        problems.append(
            f"it is one shard ({meta['shard'][0]}/{meta['shard'][1]}) only: merge the shards with `aj mine-merge`"
        )
    if not store.done_indices():
        problems.append("it has no finished prompt")
    return problems


# -- 2. train ---------------------------------------------------------------------------------------


class TrainStage(Stage):
    """Train the judge on the mined labels -> ``OUT/judge.safetensors``, or ``OUT/judge.none.json`` saying why not."""

    name = "train"

    def inputs(self, p: Pipeline) -> dict[str, Any]:
        if p.cfg.judge:
            return {"mine": p.hashes["mine"], "given_judge": judge_file_key(p)}
        keep = (
            {"keep_truncated": True} if p.cfg.keep_truncated else {}
        )  # absent by default: old caches stay valid
        return {
            "mine": p.hashes["mine"],
            "features": p.cfg.features,
            "target_recall": p.cfg.target_recall,
            **keep,
        }

    def outputs_ok(self, p: Pipeline) -> bool:
        return p.judge_path.is_file() != p.no_judge_path.is_file()

    def run(self, p: Pipeline, resume: bool) -> dict[str, Any]:
        from autojudge.judges.dataset import expand_feature_sets, load_mined, parse_feature_set
        from autojudge.judges.train import TrainConfig, single_class_reason, train_judges

        if p.cfg.judge:
            return self._given(p)
        for stale in (p.judge_path, p.no_judge_path):
            stale.unlink(missing_ok=True)
        sets = expand_feature_sets(p.cfg.features)
        blocks = sorted({b for s in sets for b in parse_feature_set(s)} | {"x"})
        if not MinedStore(p.mined_dir).label_rows():
            return self._no_judge(p, "mining found no draft/target mismatch to learn from")
        try:
            # an external directory may hold a prompt a running `aj mine` is writing: read finished ones only
            data = load_mined(
                p.mined_dir, blocks, skip_incomplete=bool(p.cfg.mined), keep_truncated=p.cfg.keep_truncated
            )
        except MinedDataError as e:
            raise PipelineError(f"reading the mined data failed: {e}") from e
        if data.n == 0:
            return self._no_judge(
                p,
                f"all {data.excluded_truncated} labels were truncated rollouts (raise --max-new-tokens, or --keep-truncated)",
            )
        reason = single_class_reason(data.labels)
        if reason is not None:
            return self._no_judge(p, reason)
        try:
            # few mined prompts (the CPU defaults) may allow no held-out split with both classes: train
            # in-sample then (flagged); the threshold is still chosen by decoding held-out validation prompts
            result = train_judges(
                data, sets, TrainConfig(target_recall=p.cfg.target_recall, in_sample_fallback=True)
            )
        except (MinedDataError, ValueError) as e:
            raise PipelineError(
                f"training the judge failed: {e}. Mine more prompts (--mine-limit) so that both important "
                "and unimportant mismatches appear in the judge's training and validation prompts."
            ) from e
        result.save(p.judge_path)
        brief = result.brief()
        if brief.in_sample_note is not None:
            p.log(f"[yellow]judge: {brief.in_sample_note}[/]")
        if data.excluded_truncated:
            p.log(
                f"judge: left out {data.excluded_truncated} truncated label(s) (rollouts cut by the token budget)"
            )
        return {**brief.as_dict(), "excluded_truncated": data.excluded_truncated}

    @staticmethod
    def _given(p: Pipeline) -> dict[str, Any]:
        """``--judge``: check the artifact against this run's models and use it as the trained judge."""
        import shutil

        from autojudge.judges.artifact import JudgeArtifactError, load_judge
        from autojudge.judges.shipped import describe_artifact

        src = given_judge_path(p)
        # the stale outputs go, except OUT/judge.safetensors when that is the file given (this run's own judge)
        own = p.judge_path.is_file() and src.resolve() == p.judge_path.resolve()
        for stale in (p.no_judge_path,) if own else (p.judge_path, p.no_judge_path):
            stale.unlink(missing_ok=True)
        try:
            load_judge(
                src,
                target_fingerprint=p.pair.target.fingerprint(),
                draft_fingerprint=p.pair.draft.fingerprint(),
            )
        except JudgeArtifactError as e:
            raise PipelineError(f"--judge {p.cfg.judge}: {e}") from e
        facts = describe_artifact(str(p.cfg.judge), src)
        if facts.task not in (None, p.task.name):
            p.log(
                f"[yellow]judge: --judge {p.cfg.judge} was trained on task {facts.task!r}, this run is {p.task.name!r}[/]"
            )
        if not own:  # `--judge OUT/judge.safetensors` keeps a run going with its judge after a retrain
            shutil.copyfile(src, p.judge_path)
        metrics = facts.meta.get("metrics") or {}
        shipped = not Path(str(p.cfg.judge)).is_file()
        return {"chosen": facts.feature_set, "threshold": facts.threshold, "val_auc": facts.auc,
                "train_auc": metrics.get("train_auc"), "n_labels": facts.labels, "split": metrics.get("split") or {},
                "source": f"shipped judge {p.cfg.judge!r}" if shipped else f"judge artifact {p.cfg.judge}",
                "labels_from": "shipped" if shipped else "artifact", "task_trained": facts.task}  # fmt: skip

    @staticmethod
    def _no_judge(p: Pipeline, reason: str) -> dict[str, Any]:
        """No judge can be trained: the run goes on with target-only, lossless SD and Top-K, and says why."""
        reason += "; the run continues without a judge (lossless SD is recommended): mine more prompts (--mine-limit, --max-mismatches)"
        atomic_write_json(p.no_judge_path, {"judge": None, "reason": reason})
        p.log(f"[yellow]judge: {reason}[/]")
        return {"judge": None, "reason": reason}


# -- decoding stages ---------------------------------------------------------------------------------


class DecodingStage(Stage):
    """A stage that decodes examples in several modes into ``directory(p)/<mode>.jsonl`` (rows cached per mode)."""

    which: ClassVar[str]  # "validation" / "eval": part of the rows' cache key, and the progress bar's name

    @abstractmethod
    def directory(self, p: Pipeline) -> Path: ...

    @abstractmethod
    def examples(self, p: Pipeline) -> list[Any]: ...

    def base_key(self, p: Pipeline) -> dict[str, Any]:
        """The rows' cache key inputs. Not the example ids: each row names its example, so a run extended
        to more problems (``--eval-limit``, with ``--resume``) decodes only the new ones."""
        return {"which": self.which, "task": p.task_info(), "models": p.models_key(),
                **p.eval_settings().as_dict(), **p.backend_key()}  # fmt: skip

    def decode(
        self, p: Pipeline, modes: list[ModeSpec], examples: list[Any], resume: bool
    ) -> dict[str, list[dict[str, Any]]]:
        judges = {m.name: make_judge(m, p.judge_path, p.pair, p.cfg.device) for m in modes}
        sha = file_sha256(p.judge_path) if p.has_judge() else None
        batch = min(p.cfg.eval_batch, len(examples)) if p.batched_engine() is not None else 1
        with DecodeProgress(p.cfg.progress, self.which, len(examples) * len(modes), batch=batch) as update:
            return evaluate_modes(
                p.task, p.engine(), examples, modes, self.directory(p), settings=p.eval_settings(), judges=judges,
                base_key=self.base_key(p), judge_sha256=sha, resume=resume, progress=update,
                sitting=p.sitting, batch=p.cfg.eval_batch, batch_engine=p.batched_engine(),
            )  # fmt: skip

    def rows_complete(self, p: Pipeline, modes: list[ModeSpec], examples: list[Any]) -> bool:
        base = self.base_key(p)
        sha = file_sha256(p.judge_path) if p.has_judge() else None
        ids = [e.id for e in examples]
        return all(mode_complete(self.directory(p), m, ids, mode_key(base, m, sha)) for m in modes)


# -- 3. select --------------------------------------------------------------------------------------


class SelectStage(DecodingStage):
    """Choose the judge's threshold by decoding VALIDATION prompts -> ``OUT/validation/`` (rows, ``selection.json``)."""

    name = "select"
    which = "validation"

    def directory(self, p: Pipeline) -> Path:
        return p.val_dir

    @staticmethod
    def val_offset(p: Pipeline) -> int:
        """Index of the first validation prompt in the mining split: right after the mined ones
        (with ``--judge``: 0, and the prompts the judge's labels came from are left out, see :meth:`examples`)."""
        if p.cfg.judge:
            return 0
        if not p.cfg.mined:
            return p.cfg.mine_limit
        done = MinedStore(p.mined_dir).done_indices()
        return max(done) + 1 if done else 0

    def examples(self, p: Pipeline) -> list[Any]:
        c, split = p.cfg, p.task.mining_split
        if c.val_limit == 0:  # no validation: the calibrated threshold is recommended unchecked
            return []
        if c.judge:
            return self._examples_unseen_by_judge(p)
        offset = self.val_offset(p)
        rows = p.task.load(split, data_dir=c.data_dir, limit=offset + c.val_limit)
        val = rows[offset:]
        if not val:
            raise PipelineError(
                f"the {split!r} split has {len(rows)} prompts: none left for validation after the {offset} mined ones"
            )
        return val

    @staticmethod
    def _examples_unseen_by_judge(p: Pipeline) -> list[Any]:
        """``--judge``: the first ``val_limit`` prompts of the mining split the judge's labels did not come from
        (the artifact records them); an artifact that records none: the split's last ``val_limit`` prompts."""
        from autojudge.judges.artifact import read_judge_metadata

        c, split = p.cfg, p.task.mining_split
        seen = (read_judge_metadata(given_judge_path(p)).get("mined") or {}).get("prompt_ids")
        rows = p.task.load(split, data_dir=c.data_dir)
        val = (
            rows[-c.val_limit :]
            if seen is None
            else [e for e in rows if e.id not in set(seen)][: c.val_limit]
        )
        if not val:
            raise PipelineError(
                f"the {split!r} split has no prompt left for validation that the judge was not trained on"
            )
        return val

    @staticmethod
    def _check_disjoint_from_eval(p: Pipeline, examples: list[Any]) -> None:
        """Nothing evaluated may choose the threshold: validation ids must not be evaluation ids (e.g. HumanEval's
        ``mine`` split is part of its ``test`` split)."""
        if not examples:
            return
        evaluated = {e.id for e in p.task.load(p.eval_split, data_dir=p.cfg.data_dir, limit=p.cfg.eval_limit)}
        both = [e.id for e in examples if e.id in evaluated]
        if both:
            raise PipelineError(
                f"validation prompt(s) {', '.join(both[:3])}{' ...' if len(both) > 3 else ''} of the "
                f"{p.task.mining_split!r} split are also evaluated (--eval-split {p.eval_split}): the threshold would "
                "be chosen on test problems. Evaluate another split, or pass --val-limit 0 to keep the judge's "
                "calibrated threshold without a validation check"
            )

    def modes(self, p: Pipeline, calibrated: float | None) -> list[ModeSpec]:
        if calibrated is None or p.cfg.val_limit == 0:  # no judge / no validation: nothing decoded
            return []
        return build_modes([*p.cfg.val_thresholds, calibrated], sd=False)

    def inputs(self, p: Pipeline) -> dict[str, Any]:
        c = p.cfg
        return {**_common(p), "train": p.hashes["train"], "val_offset": self.val_offset(p), "val_limit": c.val_limit,
                "val_thresholds": sorted(c.val_thresholds), "max_accuracy_drop": c.max_accuracy_drop,
                **p.eval_settings().as_dict(), **p.backend_key()}  # fmt: skip

    def outputs_ok(self, p: Pipeline) -> bool:
        path = p.val_dir / SELECTION_FILE
        if not path.is_file():
            return False
        modes = self.modes(p, json.loads(path.read_text())["calibrated_threshold"])
        return not modes or self.rows_complete(p, modes, self.examples(p))

    def run(self, p: Pipeline, resume: bool) -> dict[str, Any]:
        calibrated = calibrated_threshold(p)
        modes = self.modes(p, calibrated)
        examples = self.examples(p)
        self._check_disjoint_from_eval(p, examples)
        aggs: dict[str, Any] = {}
        if calibrated is None:  # no judge: nothing to choose, lossless is recommended without decoding
            sel = {"reference_accuracy": None, "max_accuracy_drop_points": p.cfg.max_accuracy_drop, "candidates": [],
                   "recommended_threshold": 0.0, "recommended_mode": "sd", "within_budget": False}  # fmt: skip
        elif not examples:  # --val-limit 0: the judge's calibrated threshold, not checked by decoding
            sel = {"reference_accuracy": None, "max_accuracy_drop_points": p.cfg.max_accuracy_drop, "candidates": [],
                   "recommended_threshold": calibrated, "within_budget": None,
                   "recommended_mode": ModeSpec("judge", threshold=calibrated).name if calibrated > 0 else "sd",
                   "unchecked": True}  # fmt: skip
        else:
            rows = self.decode(p, modes, examples, resume)
            aggs = aggregate_modes(rows, modes)
            sel = select_threshold(aggs, p.cfg.max_accuracy_drop)
        sel.update({
            "calibrated_threshold": calibrated,
            "prompt_ids": [e.id for e in examples],
            "split": p.task.mining_split,
            "modes": aggs,
        })  # fmt: skip
        atomic_write_json(p.val_dir / SELECTION_FILE, sel)
        return {
            "recommended_threshold": sel["recommended_threshold"],
            "reference_accuracy": sel["reference_accuracy"],
        }


def calibrated_threshold(p: Pipeline) -> float | None:
    """The judge's recall-calibrated threshold (from its artifact); None when no judge could be trained."""
    from autojudge.judges.artifact import read_judge_metadata

    if not p.has_judge():
        return None
    return float(read_judge_metadata(p.judge_path)["threshold"])


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
            {
                "threshold": t,
                "accuracy": acc,
                "delta_points": 100.0 * (acc - ref),
                "within_budget": acc >= ref - max_drop_points / 100.0 - 1e-12,
            }
            for t, acc in sorted(cands.items())
        ],  # fmt: skip
        "recommended_threshold": 0.0 if pick is None else pick,
        "recommended_mode": "sd" if not pick else ModeSpec("judge", threshold=pick).name,
        "within_budget": pick is not None,
    }


def read_selection(p: Pipeline) -> dict[str, Any]:
    """``OUT/validation/selection.json``, written by the ``select`` stage."""
    return json.loads((p.val_dir / SELECTION_FILE).read_text())


def eval_modes(p: Pipeline) -> list[ModeSpec]:
    """The evaluated modes: ``ar``, ``sd``, the judge at ``thresholds`` + calibrated + recommended, Top-K."""
    sel = read_selection(p)
    if sel["calibrated_threshold"] is None:  # no judge
        return build_modes([], p.cfg.top_k)
    ts = [*p.cfg.thresholds, sel["calibrated_threshold"]]
    if sel["recommended_threshold"] > 0:  # 0 is lossless: the `sd` mode already measures it
        ts.append(sel["recommended_threshold"])
    return build_modes(ts, p.cfg.top_k)


# -- 4. evaluate ------------------------------------------------------------------------------------


class EvaluateStage(DecodingStage):
    """Decode the first ``eval_limit`` prompts of the eval split in every mode -> ``OUT/eval/<mode>.jsonl``."""

    name = "evaluate"
    which = "eval"

    def directory(self, p: Pipeline) -> Path:
        return p.eval_dir

    def examples(self, p: Pipeline) -> list[Any]:
        return p.task.load(p.eval_split, data_dir=p.cfg.data_dir, limit=p.cfg.eval_limit)

    def inputs(self, p: Pipeline) -> dict[str, Any]:
        c = p.cfg
        return {**_common(p), "train": p.hashes["train"], "select": p.hashes["select"],
                "eval_limit": c.eval_limit, "thresholds": sorted(c.thresholds), "top_k": sorted(c.top_k),
                **p.eval_settings().as_dict(), **p.backend_key()}  # fmt: skip

    def outputs_ok(self, p: Pipeline) -> bool:
        return self.rows_complete(p, eval_modes(p), self.examples(p))

    def run(self, p: Pipeline, resume: bool) -> dict[str, Any]:
        modes = eval_modes(p)
        examples = self.examples(p)
        rows = self.decode(p, modes, examples, resume)
        return {
            "modes": [m.name for m in modes],
            "n": len(examples),
            "rows": sum(len(r) for r in rows.values()),
        }


# -- 5. report --------------------------------------------------------------------------------------


class ReportStage(Stage):
    """Aggregate the eval rows -> ``OUT/summary.json``, ``OUT/report.md``, ``OUT/plots/*.png``."""

    name = "report"

    def inputs(self, p: Pipeline) -> dict[str, Any]:
        return {s: p.hashes[s] for s in p.upstream(self.name)}

    def outputs_ok(self, p: Pipeline) -> bool:
        return all((p.root / f).is_file() for f in (SUMMARY_FILE, "report.md"))

    def run(self, p: Pipeline, resume: bool) -> dict[str, Any]:
        modes = eval_modes(p)
        ids = [e.id for e in EvaluateStage().examples(p)]
        rows = {m.name: load_mode_rows(p.eval_dir, m, ids) for m in modes}
        # a mode's file may hold more problems than this run reports (a larger earlier run): its batches'
        # throughput then comes from all their rows
        whole = {m.name: load_mode_rows(p.eval_dir, m) for m in modes}
        record = lambda s: p.state.get(s) or {}  # noqa: E731
        summary = build_summary(
            task=p.task.name,
            metric=p.task.info().get("metric", "accuracy"),
            draft=p.pair.draft.fingerprint(),
            target=p.pair.target.fingerprint(),
            dtype=p.dtype_name(),
            settings=p.cfg.settings(),
            eval_split=p.eval_split,
            modes=modes,
            rows=rows,
            aggregates=aggregate_modes(rows, modes, context_by_mode=whole),
            selection=read_selection(p),
            mining=(
                {"skipped": True}
                if p.cfg.judge
                else record("mine").get("info", {}).get("summary") or MinedStore(p.mined_dir).summary()
            ),  # fmt: skip
            training=record("train").get("info", {}),
            stages={
                s: {k: v for k, v in record(s).items() if k in ("seconds", "finished", "hash")}
                for s in p.upstream(self.name)
            },  # fmt: skip
            samples_dir=p.eval_dir.relative_to(p.root).as_posix(),
        )
        write_report(p.root, summary)
        return {"modes": len(modes)}


DEFAULT_STAGES: tuple[Stage, ...] = (MineStage(), TrainStage(), SelectStage(), EvaluateStage(), ReportStage())
