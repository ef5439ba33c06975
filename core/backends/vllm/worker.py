"""vLLM worker extension: the RPC methods that put a judge into every worker's model runner.

Pass ``worker_extension_cls=WORKER_EXTENSION`` to ``vllm.LLM`` (or
``--worker-extension-cls`` to ``vllm serve``); vLLM mixes this class into its
worker class, so ``llm.collective_rpc("install_judge", args=(description,))`` runs
:meth:`AutojudgeWorkerExtension.install_judge` in every worker (all tensor-parallel
ranks). ``description`` is the judge's JSON-able
:meth:`~autojudge.core.judge.Judge.describe` output (a trained judge's weights
inline): :func:`build_judge` rebuilds it through the plugin registry's judge kinds,
so no Python objects and no file paths cross process boundaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autojudge.core.judge import Judge

WORKER_EXTENSION = "autojudge.core.backends.vllm.worker.AutojudgeWorkerExtension"


def build_judge(description: Mapping[str, Any], device: str | None = None) -> Judge:
    """The judge of ``description`` (rebuilt by its registered kind), checked for the vLLM backend."""
    from autojudge.plugins.manager import judge_from_description

    judge = judge_from_description(description, device=device)
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

    def install_judge(self, description: dict[str, Any] | None) -> dict[str, Any]:
        """Install the judge of ``description`` (None: remove it, i.e. lossless) in this worker's model runner."""
        from autojudge.core.backends.vllm.sampler import install_judge_on_runner

        runner = self.model_runner  # type: ignore[attr-defined]
        judge = None if description is None else build_judge(description, device=str(runner.device))
        install_judge_on_runner(runner, judge)
        return {"judge": None if judge is None else judge.summary(), "device": str(runner.device)}

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
