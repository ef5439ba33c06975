"""``VLLMEngine``: autojudge's three decoding modes on vLLM (batched, continuous batching).

``generate(prompts, mode=...)`` mirrors :meth:`autojudge.core.engine.SpeculativeEngine.generate`
for a *batch* of prompts:

* ``ar``: target only (a vLLM engine without speculative decoding, created on first use);
* ``sd``: vLLM's lossless speculative decoding with the draft model (``draft_model`` method);
* ``judge``: the same, with an AutoJudge judge inside vLLM's verification
  (:mod:`autojudge.core.backends.vllm.sampler`).

Both vLLM engines run in this process by default (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
``distributed_executor_backend="uni"``): start-up is several times faster on a small
machine and tests can reach the model runner. ``multiprocess=True`` keeps vLLM's
default process layout (needed for tensor parallelism); the judge travels to the
workers as a JSON-able config either way.

Limits: the number of draft tokens ``k`` is fixed when the speculative engine is
created (vLLM's ``num_speculative_tokens``); acceptance metrics are per call (the
whole batch), from vLLM's own spec-decode counters plus the judge's counters.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autojudge.core.backends.vllm import require_vllm
from autojudge.core.backends.vllm.worker import WORKER_EXTENSION, judge_config

MODES = ("ar", "sd", "judge")

_COUNTERS = (
    "num_drafts",
    "num_draft_tokens",
    "num_accepted_tokens",
    "num_judge_accepted",
    "num_mismatches_reached",
)


@dataclass
class VLLMMetrics:
    """Acceptance and speed of one ``generate`` call (the whole batch), named like the engine's metrics."""

    num_prompts: int = 0
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    num_drafts: int = 0  # per request and verification step with draft tokens (vLLM's counter)
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0  # lossless matches + judge accepts
    num_judge_accepted: int = 0
    num_mismatches_reached: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    wall_time: float = 0.0

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens emitted per verification (accepted drafts + 1), as the engine's metric; 1.0 target-only."""
        return (self.num_accepted_tokens + self.num_drafts) / self.num_drafts if self.num_drafts else 1.0

    @property
    def draft_acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.num_output_tokens / self.wall_time if self.wall_time > 0 else 0.0

    def acceptance_per_position(self) -> list[float]:
        return [a / self.num_drafts if self.num_drafts else 0.0 for a in self.accepted_per_position]

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_prompts": self.num_prompts,
            "num_prompt_tokens": self.num_prompt_tokens,
            "num_output_tokens": self.num_output_tokens,
            "num_drafts": self.num_drafts,
            "num_draft_tokens": self.num_draft_tokens,
            "num_accepted_tokens": self.num_accepted_tokens,
            "num_judge_accepted": self.num_judge_accepted,
            "num_mismatches_reached": self.num_mismatches_reached,
            "mean_acceptance_length": self.mean_acceptance_length,
            "draft_acceptance_rate": self.draft_acceptance_rate,
            "acceptance_per_position": self.acceptance_per_position(),
            "wall_time": self.wall_time,
            "tokens_per_s": self.tokens_per_s,
        }


@dataclass
class VLLMResult:
    """One prompt's output; ``metrics`` is shared by every result of the same ``generate`` call."""

    tokens: list[int]
    text: str
    finish_reason: str  # "eos", "stop" or "length" (the engine's names)
    metrics: VLLMMetrics
    prompt_tokens: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": self.tokens,
            "finish_reason": self.finish_reason,
            "metrics": self.metrics.as_dict(),
        }


def _model_dir(spec: str | Path) -> str:
    """A local model directory for a preset name, a path or a ``.gguf`` file (hub ids pass through)."""
    from autojudge.core.models import resolve_spec

    return str(resolve_spec(str(spec)))


class VLLMEngine:
    """Greedy target-only, lossless SD and judged SD on vLLM for batches of prompts.

    ``target`` and ``draft`` are anything :func:`autojudge.core.models.load_model` accepts
    (preset name, model directory, ``.gguf`` file); presets and GGUF files are
    converted to dense directories first (vLLM 0.32 cannot read GGUF).
    ``dtype="float32"`` and ``enforce_eager=True`` (the defaults) make the outputs
    comparable token for token with :class:`~autojudge.core.engine.SpeculativeEngine`.
    """

    def __init__(
        self,
        target: str | Path,
        draft: str | Path | None = None,
        *,
        k: int = 5,
        dtype: str | None = "float32",
        enforce_eager: bool = True,
        max_model_len: int = 2048,
        max_num_seqs: int = 8,
        kv_cache_gib: float | None = 1.0,
        seed: int = 0,
        multiprocess: bool = False,
        enable_prefix_caching: bool = True,
        llm_kwargs: dict[str, Any] | None = None,
    ):
        require_vllm()
        if k < 1:
            raise ValueError("draft length k must be >= 1")
        from autojudge.core.models import resolve_dtype

        dtype = str(resolve_dtype(dtype)).removeprefix("torch.")  # "fp32" -> "float32", None -> "bfloat16"
        self.target_dir = _model_dir(target)
        self.draft_dir = _model_dir(draft) if draft is not None else None
        self.k = k
        self.multiprocess = multiprocess
        self._common: dict[str, Any] = {
            "model": self.target_dir,
            "dtype": dtype,
            "enforce_eager": enforce_eager,
            "max_model_len": max_model_len,
            "max_num_seqs": max_num_seqs,
            "seed": seed,
            "enable_prefix_caching": enable_prefix_caching,
        }
        if kv_cache_gib is not None:
            self._common["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        if not multiprocess:
            self._common["distributed_executor_backend"] = "uni"
        self._common.update(llm_kwargs or {})
        self._llms: dict[str, Any] = {}
        self._installed: dict[str, Any] | None | str = "unset"
        self._tokenizer: Any = None
        self._fingerprints: dict[str, dict[str, Any]] | None = None

    # -- set-up -----------------------------------------------------------------------
    def _env(self) -> None:
        # read by vLLM when an engine starts; the caller's own settings win
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "1" if self.multiprocess else "0")
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")  # the judge hooks the V1 runner
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # honour OMP_NUM_THREADS on shared CPUs
        if not self.multiprocess:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

    def llm(self, kind: str) -> Any:
        """The vLLM engine for ``kind`` = ``"ar"`` (target only) or ``"spec"`` (draft + verification)."""
        if kind not in self._llms:
            self._env()
            from vllm import LLM

            kwargs = dict(self._common)
            if kind == "spec":
                if self.draft_dir is None:
                    raise ValueError("speculative decoding needs a draft model")
                kwargs["speculative_config"] = {
                    "method": "draft_model",
                    "model": self.draft_dir,
                    "num_speculative_tokens": self.k,
                }
                kwargs["worker_extension_cls"] = WORKER_EXTENSION
            self._llms[kind] = LLM(**kwargs)
        return self._llms[kind]

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.target_dir)
        return self._tokenizer

    def fingerprints(self) -> dict[str, dict[str, Any]]:
        """Fingerprints of target and draft (what judge artifacts are checked against)."""
        if self._fingerprints is None:
            from transformers import AutoConfig, AutoTokenizer

            from autojudge.core.fingerprint import model_fingerprint

            fp = {"target": model_fingerprint(AutoConfig.from_pretrained(self.target_dir), self.tokenizer)}
            if self.draft_dir is not None:
                fp["draft"] = model_fingerprint(
                    AutoConfig.from_pretrained(self.draft_dir), AutoTokenizer.from_pretrained(self.draft_dir)
                )
            self._fingerprints = fp
        return self._fingerprints

    def judge_config(self, judge: str | Path, threshold: float | None = None) -> dict[str, Any]:
        """A judge config checked here (artifact readable, fingerprints, features) before workers load it."""
        from autojudge.core.backends.vllm.worker import build_judge

        fp = self.fingerprints()
        cfg = judge_config(
            str(judge), threshold=threshold, target_fingerprint=fp["target"], draft_fingerprint=fp.get("draft")
        )
        build_judge(cfg)  # raises JudgeArtifactError / ValueError with the file's name
        return cfg

    def install(self, config: dict[str, Any] | None) -> None:
        """Install a judge config (None: lossless) in every worker of the speculative engine."""
        if config == self._installed:
            return
        self.llm("spec").collective_rpc("install_judge", args=(config,))
        self._installed = config

    def judge_stats(self, reset: bool = False) -> dict[str, Any]:
        """Verification and judge counters of the speculative engine (rank 0's; every rank decides alike)."""
        if "spec" not in self._llms:
            from autojudge.core.backends.vllm.judging import COUNTER_NAMES

            return {**dict.fromkeys(COUNTER_NAMES, 0), "accepted_per_position": []}
        return self._llms["spec"].collective_rpc("judge_stats", args=(reset,))[0]

    def close(self) -> None:
        """Drop the vLLM engines (frees their memory once collected)."""
        for llm in self._llms.values():
            shutdown = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if shutdown is not None and hasattr(shutdown, "shutdown"):
                shutdown.shutdown()
        self._llms.clear()
        self._installed = "unset"

    # -- generation ---------------------------------------------------------------------
    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        """Token ids; text is tokenized without special tokens, like the engine (chat templates carry them)."""
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return [int(t) for t in prompt]

    def generate(
        self,
        prompts: str | Sequence[int] | Sequence[str | Sequence[int]],
        *,
        mode: str = "sd",
        judge: str | Path | dict[str, Any] | None = None,
        threshold: float | None = None,
        k: int | None = None,
        max_new_tokens: int = 256,
        stop_sequences: Sequence[str] = (),
        eos_token_ids: Iterable[int] | None = None,
    ) -> list[VLLMResult]:
        """Greedy generation for every prompt (one call = one vLLM batch); results in prompt order.

        ``judge`` is a baseline name (``never``, ``always``, ``topk:K``, ``prob:P``), a judge
        artifact path, or a config from :meth:`judge_config`. A single prompt (a string or a
        list of ints) still returns a list of one result.
        """
        from vllm import SamplingParams

        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        if k is not None and k != self.k and mode != "ar":
            raise ValueError(
                f"this VLLMEngine verifies k={self.k} draft tokens (vLLM fixes num_speculative_tokens "
                f"at start-up); create another VLLMEngine for k={k}"
            )
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        single = isinstance(prompts, str) or (
            isinstance(prompts, Sequence) and len(prompts) > 0 and isinstance(prompts[0], int)
        )
        batch = [prompts] if single else list(prompts)  # type: ignore[list-item]
        ids = [self.encode(p) for p in batch]
        if not ids or any(not p for p in ids):
            raise ValueError("empty prompt")

        if mode == "ar":
            llm = self.llm("ar")
        else:
            llm = self.llm("spec")
            if mode == "judge":
                if judge is None:
                    raise ValueError("mode 'judge' needs a judge")
                cfg = judge if isinstance(judge, dict) else self.judge_config(judge, threshold)
            else:
                cfg = None
            self.install(cfg)

        params = SamplingParams(
            temperature=0.0,
            max_tokens=max_new_tokens,
            stop=list(stop_sequences) or None,
            stop_token_ids=sorted(set(eos_token_ids)) if eos_token_ids is not None else None,
            ignore_eos=eos_token_ids is not None,
            include_stop_str_in_output=False,
            skip_special_tokens=True,
        )
        before = self.judge_stats() if mode != "ar" else None
        t0 = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
        wall = time.perf_counter() - t0

        met = VLLMMetrics(num_prompts=len(ids), num_prompt_tokens=sum(map(len, ids)), wall_time=wall)
        if before is not None:
            after = self.judge_stats()
            for key in _COUNTERS:
                setattr(met, key, after[key] - before[key])
            pb = before["accepted_per_position"]
            met.accepted_per_position = [
                a - (pb[i] if i < len(pb) else 0) for i, a in enumerate(after["accepted_per_position"])
            ]
        results = []
        for p, out in zip(ids, outs, strict=True):
            c = out.outputs[0]
            toks = list(c.token_ids)
            met.num_output_tokens += len(toks)
            reason = "length" if c.finish_reason == "length" else ("stop" if isinstance(c.stop_reason, str) else "eos")
            results.append(VLLMResult(tokens=toks, text=c.text, finish_reason=reason, metrics=met, prompt_tokens=p))
        return results


def judge_spec_of(judge: Any, artifact: str | Path | None = None) -> str | dict[str, Any] | None:
    """The vLLM judge spec for an engine :class:`~autojudge.core.judge.Judge` object.

    Baselines map to their names; a :class:`~autojudge.core.judge.LinearJudge` (loaded
    from ``artifact``) maps to the artifact path with the judge's threshold.
    """
    from autojudge.core.judge import AlwaysAccept, LinearJudge, NeverAccept, ProbThresholdJudge, TopKJudge

    if judge is None or isinstance(judge, (str, dict)):
        return judge
    if isinstance(judge, NeverAccept):
        return "never"
    if isinstance(judge, AlwaysAccept):
        return "always"
    if isinstance(judge, TopKJudge):
        return f"topk:{judge.k}"
    if isinstance(judge, ProbThresholdJudge):
        return f"prob:{judge.p_min}"
    if isinstance(judge, LinearJudge):
        if artifact is None:
            raise ValueError("a LinearJudge needs the path of its artifact to run on vLLM")
        return judge_config(str(artifact), threshold=judge.threshold)
    raise TypeError(f"the vLLM backend cannot run judge {type(judge).__name__}")


def generation_metrics(m: VLLMMetrics, k: int) -> Any:
    """Engine-style :class:`~autojudge.core.metrics.GenerationMetrics` for a single prompt's ``VLLMMetrics``.

    The per-cycle lists are rebuilt from vLLM's per-position counts (``accepted_per_position[i]``
    = cycles that accepted draft position ``i``), which fixes the multiset of accepted lengths
    exactly; cycle order is lost, and every cycle counts as proposing ``k`` tokens.
    """
    from autojudge.core.metrics import GenerationMetrics

    g = GenerationMetrics(num_prompt_tokens=m.num_prompt_tokens, num_output_tokens=m.num_output_tokens)
    g.num_drafts, g.num_draft_tokens = m.num_drafts, m.num_draft_tokens
    g.num_accepted_tokens, g.num_judge_accepted = m.num_accepted_tokens, m.num_judge_accepted
    g.num_target_forwards = m.num_drafts + 1
    g.wall_time = m.wall_time
    per = list(m.accepted_per_position) + [0]
    at_least = [m.num_drafts, *per]  # at_least[a] = cycles with >= a accepted
    for a in range(len(at_least) - 1):
        count = at_least[a] - at_least[a + 1]
        g.accepted_per_cycle += [a] * count
    g.proposed_per_cycle = [k] * len(g.accepted_per_cycle)
    g.emitted_per_cycle = [a + 1 for a in g.accepted_per_cycle]
    return g


class PerPromptEngine:
    """A :class:`VLLMEngine` behind :class:`~autojudge.core.engine.SpeculativeEngine`'s one-prompt interface.

    What ``aj run --backend vllm`` and ``aj decode --backend vllm`` use: ``generate(prompt, ...)``
    returns a :class:`~autojudge.core.engine.GenerationResult` with engine-style metrics
    (:func:`generation_metrics`); engine judge objects are translated by :func:`judge_spec_of`.
    """

    def __init__(self, engine: VLLMEngine, artifact: str | Path | None = None):
        self.vllm = engine
        self.artifact = artifact

    @property
    def tokenizer(self) -> Any:
        return self.vllm.tokenizer

    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        mode: str = "sd",
        judge: Any = None,
        k: int | None = None,
        max_new_tokens: int = 256,
        stop_sequences: Sequence[str] = (),
        eos_token_ids: Iterable[int] | None = None,
        reuse_cache: bool = True,  # vLLM's prefix cache plays this role
        threshold: float | None = None,
    ) -> Any:
        from autojudge.core.engine import GenerationResult

        spec = judge_spec_of(judge, self.artifact) if mode == "judge" else None
        res = self.vllm.generate(
            prompt, mode=mode, judge=spec, threshold=threshold, k=k, max_new_tokens=max_new_tokens,
            stop_sequences=stop_sequences, eos_token_ids=eos_token_ids,
        )[0]  # fmt: skip
        met = generation_metrics(res.metrics, self.vllm.k if mode != "ar" else 0)
        if mode == "ar":  # like the engine: one cycle per token after the first, nothing proposed
            n = max(len(res.tokens) - 1, 0)
            met.num_drafts, met.num_target_forwards = n, n + 1
            met.proposed_per_cycle, met.accepted_per_cycle, met.emitted_per_cycle = [0] * n, [0] * n, [1] * n
        return GenerationResult(
            tokens=res.tokens, text=res.text, finish_reason=res.finish_reason, metrics=met,
            prompt_tokens=res.prompt_tokens,
        )  # fmt: skip
