"""vLLM worker extension: the RPC methods that put a judge into every worker's model runner.

Pass ``worker_extension_cls=WORKER_EXTENSION`` to ``vllm.LLM`` (or
``--worker-extension-cls`` to ``vllm serve``); vLLM mixes this class into its
worker class, so ``llm.collective_rpc("install_judge", args=(config,))`` runs
:meth:`AutojudgeWorkerExtension.install_judge` in every worker (all tensor-parallel
ranks). ``config`` is a plain JSON-able dict (:func:`judge_config`): the judge is
loaded from its spec (baseline name or artifact path) inside the worker, so no
Python objects cross process boundaries.
"""

from __future__ import annotations

from typing import Any

from autojudge.core.judge import Judge

WORKER_EXTENSION = "autojudge.core.backends.vllm.worker.AutojudgeWorkerExtension"


def judge_config(
    spec: str,
    *,
    threshold: float | None = None,
    target_fingerprint: dict[str, Any] | None = None,
    draft_fingerprint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-able description of a judge that :func:`build_judge` turns back into a :class:`Judge`."""
    return {
        "spec": str(spec),
        "threshold": threshold,
        "target_fingerprint": target_fingerprint,
        "draft_fingerprint": draft_fingerprint,
    }


def build_judge(config: dict[str, Any], device: str = "cpu") -> Judge:
    """A baseline (``never``, ``always``, ``topk:K``, ``prob:P``) or a trained artifact, checked."""
    from pathlib import Path

    from autojudge.judges.spec import BASELINE_FORMS, parse_baseline

    spec = config["spec"]
    judge = parse_baseline(spec)
    if judge is not None:
        if config.get("threshold") is not None:
            raise ValueError("a threshold applies to trained judge artifacts, not to baseline judges")
        return judge
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"judge {spec!r} is neither a baseline ({', '.join(BASELINE_FORMS)}) nor a file")
    from autojudge.judges.artifact import load_judge

    judge, _meta = load_judge(
        path,
        target_fingerprint=config.get("target_fingerprint"),
        draft_fingerprint=config.get("draft_fingerprint"),
        threshold=config.get("threshold"),
        device=device,
    )
    check_vllm_features(judge)
    return judge


def check_vllm_features(judge: Judge) -> None:
    """Raise unless the vLLM backend can compute every feature ``judge`` reads (no ``dd``)."""
    if judge.needs_draft_hidden:
        blocks = "+".join(getattr(judge, "blocks", ("dd",)))
        raise ValueError(
            f"this judge uses the feature set {blocks!r}, which needs the draft model's hidden states ('dd'); "
            "the vLLM backend supports 'dt', 'dt+x' and 'x' (retrain with `aj train --features dt+x`, "
            "see docs/vllm.md)"
        )


class AutojudgeWorkerExtension:
    """Mixed into vLLM's worker class; methods are reached with ``collective_rpc``."""

    def install_judge(self, config: dict[str, Any] | None) -> dict[str, Any]:
        """Install (or with None: remove, i.e. lossless) a judge in this worker's model runner."""
        from autojudge.core.backends.vllm.sampler import install_judge_on_runner

        runner = self.model_runner  # type: ignore[attr-defined]
        judge = None if config is None else build_judge(config, device=str(runner.device))
        install_judge_on_runner(runner, judge)
        return {"judge": None if judge is None else judge.describe(), "device": str(runner.device)}

    def judge_stats(self, reset: bool = False) -> dict[str, int]:
        """The judge's counters in this worker (zeros before any install); ``reset`` zeroes them after reading."""
        from autojudge.core.backends.vllm.judging import COUNTER_NAMES

        sampler = getattr(self.model_runner, "rejection_sampler", None)  # type: ignore[attr-defined]
        counters = getattr(sampler, "counters", None)
        if counters is None:
            return dict.fromkeys(COUNTER_NAMES, 0)
        out = counters.as_dict()
        if reset:
            counters.reset()
        return out
