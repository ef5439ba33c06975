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
workers as its JSON-able description (:meth:`~autojudge.core.judge.Judge.describe`,
rebuilt there through the plugin registry) either way.

Limits: the number of draft tokens ``k`` is fixed when the speculative engine is
created (vLLM's ``num_speculative_tokens``); acceptance metrics are per call (the
whole batch), from vLLM's own spec-decode counters plus the judge's counters, in the
engine's :class:`~autojudge.core.metrics.GenerationMetrics` (per-cycle lists rebuilt
from the per-position counts). Results are the engine's
:class:`~autojudge.core.engine.GenerationResult`; :class:`PerPromptEngine` puts this
engine behind the one-prompt :class:`~autojudge.core.engine.Engine` protocol.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autojudge.core.backends.vllm import require_vllm
from autojudge.core.backends.vllm.worker import WORKER_EXTENSION, build_judge
from autojudge.core.engine import GenerationResult, Mode, check_mode, encode
from autojudge.core.judge import Judge
from autojudge.core.metrics import GenerationMetrics

_COUNTERS = (
    "num_drafts",
    "num_draft_tokens",
    "num_accepted_tokens",
    "num_judge_accepted",
    "num_mismatches_reached",
)


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

    def judge_description(
        self, judge: Judge | Mapping[str, Any] | str, threshold: float | None = None
    ) -> dict[str, Any]:
        """The description of ``judge`` that the workers rebuild, checked here first (kind, features).

        ``judge``: a :class:`~autojudge.core.judge.Judge`, its description
        (:meth:`~autojudge.core.judge.Judge.describe`), or a registered kind's ``--judge`` form
        (``never``, ``always``, ``topk:K``, ``prob:P``, a plugin's). Judge artifact files are
        resolved one floor up: ``autojudge.judges.spec.load_judge_spec(path, target=fp["target"],
        draft=fp.get("draft"))`` with ``fp = self.fingerprints()``. ``threshold`` overrides the
        judge's (not for a kind's string form, like ``--threshold``).
        """
        if isinstance(judge, str):
            from autojudge.plugins.manager import judge_from_spec, judge_spec_forms

            named = judge_from_spec(judge)
            if named is None:
                raise ValueError(
                    f"judge {judge!r} names no registered judge kind ({', '.join(judge_spec_forms())}); "
                    "load a judge artifact with autojudge.judges.spec.load_judge_spec and pass the judge"
                )
            if threshold is not None:
                raise ValueError("a threshold applies to trained judge artifacts, not to baseline judges")
            judge = named
        description = dict(judge.describe() if isinstance(judge, Judge) else judge)
        if threshold is not None:
            description["threshold"] = threshold
        if description != self._installed:
            build_judge(description)  # unknown kind, malformed description, 'dd' features: ValueError here
        return description

    def install(self, description: Mapping[str, Any] | None) -> None:
        """Install the judge of ``description`` (None: lossless) in every worker of the speculative engine."""
        if description == self._installed:
            return
        self.llm("spec").collective_rpc("install_judge", args=(description,))
        self._installed = None if description is None else dict(description)

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
        """Token ids, as the engine's (:func:`autojudge.core.engine.encode`)."""
        return encode(self.tokenizer, prompt)

    def generate(
        self,
        prompts: str | Sequence[int] | Sequence[str | Sequence[int]],
        *,
        mode: Mode = "sd",
        judge: Judge | Mapping[str, Any] | str | None = None,
        threshold: float | None = None,
        k: int | None = None,
        max_new_tokens: int = 256,
        stop_sequences: Sequence[str] = (),
        eos_token_ids: Iterable[int] | None = None,
    ) -> list[GenerationResult]:
        """Greedy generation for every prompt (one call = one vLLM batch); results in prompt order.

        ``judge`` is a :class:`~autojudge.core.judge.Judge`, its description, or a registered
        kind's form (``never``, ``always``, ``topk:K``, ``prob:P``): see :meth:`judge_description`. A single prompt (a string or a
        list of ints) still returns a list of one result. Every result shares the batch's
        metrics: vLLM's counters, with the per-cycle lists rebuilt from the per-position counts
        (``ar``: one cycle per token after a prompt's first, nothing proposed, like the engine).
        """
        from vllm import SamplingParams

        check_mode(mode)
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
                cfg = self.judge_description(judge, threshold)
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

        met = GenerationMetrics(
            num_generations=len(ids), num_prompt_tokens=sum(map(len, ids)), wall_time=wall
        )
        if before is not None:
            after = self.judge_stats()
            for key in _COUNTERS:
                setattr(met, key, after[key] - before[key])
            pb = before["accepted_per_position"]
            met.accepted_per_position = [
                a - (pb[i] if i < len(pb) else 0) for i, a in enumerate(after["accepted_per_position"])
            ]
            met = met.with_cycles(self.k)
        results = []
        for p, out in zip(ids, outs, strict=True):
            c = out.outputs[0]
            toks = list(c.token_ids)
            met.num_output_tokens += len(toks)
            if mode == "ar":  # like the engine: one cycle per token after the first, nothing proposed
                n = max(len(toks) - 1, 0)
                met.num_drafts += n
                met.proposed_per_cycle += [0] * n
                met.accepted_per_cycle += [0] * n
                met.emitted_per_cycle += [1] * n
            reason = (
                "length"
                if c.finish_reason == "length"
                else ("stop" if isinstance(c.stop_reason, str) else "eos")
            )
            results.append(
                GenerationResult(tokens=toks, text=c.text, finish_reason=reason, metrics=met, prompt_tokens=p)
            )
        met.num_target_forwards = met.num_drafts + len(ids)  # a prefill per prompt + a verification per cycle
        return results


class PerPromptEngine:
    """A :class:`VLLMEngine` behind :class:`~autojudge.core.engine.SpeculativeEngine`'s one-prompt interface.

    What :func:`autojudge.core.backends.open_engine` returns for ``backend="vllm"`` (``aj run`` and
    ``aj decode --backend vllm``): it satisfies :class:`~autojudge.core.engine.Engine`;
    ``generate(prompt, ...)`` returns the prompt's :class:`~autojudge.core.engine.GenerationResult`;
    the judge object travels to vLLM's workers as its description.
    """

    def __init__(self, engine: VLLMEngine):
        self.vllm = engine

    @property
    def tokenizer(self) -> Any:
        return self.vllm.tokenizer

    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        mode: Mode = "sd",
        judge: Any = None,
        k: int | None = None,
        max_new_tokens: int = 256,
        stop_sequences: Sequence[str] = (),
        eos_token_ids: Iterable[int] | None = None,
        reuse_cache: bool = True,  # vLLM's prefix cache plays this role
        threshold: float | None = None,
    ) -> GenerationResult:
        return self.vllm.generate(
            prompt, mode=mode, judge=judge if mode == "judge" else None, threshold=threshold, k=k,
            max_new_tokens=max_new_tokens, stop_sequences=stop_sequences, eos_token_ids=eos_token_ids,
        )[0]  # fmt: skip
