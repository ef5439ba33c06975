"""Mining on vLLM: the rollouts of all in-flight prompts as one batched, prefix-cached ``generate``.

:class:`VLLMMiner` is a :class:`~autojudge.core.mining.pipelined.PipelinedMiner`
whose rollout backend is :class:`VLLMRollouts`: each round collects the pending
rollout requests of every in-flight prompt (initial responses and swaps) and
generates them in ONE ``LLM.generate`` call on a target-only vLLM engine with
``enable_prefix_caching=True``, greedy, ``max_tokens`` = the request's budget,
``stop`` = the task's stop sequences and ``stop_token_ids`` = the engine's EOS ids.
A rollout shares all but one token with the response it swaps into, so the
prefix cache makes its prefill nearly free.

The split of work (vLLM exposes no hidden states):

* vLLM: every rollout (the target's greedy generation: the expensive part);
* transformers, one :class:`~autojudge.core.mining.steps.Miner` per in-flight prompt
  with its own KV caches: the draft's teacher-forced argmax and the features
  (``dt``, ``tt``, ``dd``, ``x``, ``draft_rank``), single prefills that reuse the
  prompt's cache. ``dt`` is computed there too (one extra target token).

Stops are decided on token ids, never on vLLM's text: every output is re-cut with
the engine's own :class:`~autojudge.core.engine.StopChecker` (first EOS, shortest
prefix whose decoded text holds a stop sequence, budget), so responses, texts,
answers and labels are the transformers engine's whenever the greedy tokens are.
Where vLLM's incremental detokenizer stops earlier than that rule (it decodes with
prompt context), the rollout is continued in the next round from where it stopped.

Labels and features are interchangeable with the transformers backend (same
``meta.json`` settings, so shards merge); each prompt records ``backend: "vllm"``.
The speed counters differ in meaning: ``target_forwards`` = generated tokens (vLLM
decodes one token per step), ``target_tokens`` = prompt tokens not found in the
prefix cache + generated tokens - 1.

Limits: exact equality with the transformers engine needs float32 (bfloat16
kernels round differently and break near-ties); vLLM 0.32 pinned; the target is
held twice (vLLM and transformers, for the features); the transformers work runs
in the same thread, between vLLM rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from autojudge.core.engine import StopChecker, default_eos_ids
from autojudge.core.mining.pipelined import EventHook, PipelinedMiner, Slot
from autojudge.core.mining.steps import FeatureMiner, Journal, MiningConfig, Rollout, RolloutRequest
from autojudge.core.task import Task


class VLLMRollouts:
    """Greedy rollouts on a vLLM target engine, all ready requests per call (one ``generate``)."""

    max_batch = 1 << 30

    def __init__(self, llm: Any, tokenizer: Any, stop_sequences: Sequence[str], eos_token_ids: set[int]):
        self.llm, self.tokenizer = llm, tokenizer
        self.stops = [s for s in stop_sequences if s]
        self.eos = set(eos_token_ids)
        self.generate_calls = 0
        self.continued = 0  # rollouts vLLM stopped before the engine's stop rule (continued)

    def _params(self, max_tokens: int) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            temperature=0.0,
            max_tokens=max_tokens,
            stop=self.stops or None,
            stop_token_ids=sorted(self.eos),
            ignore_eos=True,  # EOS = exactly the engine's ids (stop_token_ids)
            include_stop_str_in_output=False,
            skip_special_tokens=True,
        )

    def run(self, jobs: list[tuple[Slot, RolloutRequest]]) -> list[Rollout]:
        reqs = [req for _, req in jobs]
        out: list[list[int]] = [[] for _ in reqs]
        forwards, computed = [0] * len(reqs), [0] * len(reqs)
        results: list[Rollout | None] = [None] * len(reqs)
        todo = list(range(len(reqs)))
        while todo:
            prompts = [{"prompt_token_ids": reqs[i].prompt_ids + out[i]} for i in todo]
            params = [self._params(reqs[i].max_new_tokens - len(out[i])) for i in todo]
            gens = self.llm.generate(prompts, params, use_tqdm=False)
            self.generate_calls += 1
            again = []
            for i, g in zip(todo, gens, strict=True):
                toks = list(g.outputs[0].token_ids)
                n_prompt = len(reqs[i].prompt_ids) + len(out[i])
                cached = int(getattr(g, "num_cached_tokens", 0) or 0)
                out[i] += toks
                forwards[i] += len(toks)
                computed[i] += n_prompt - cached + max(len(toks) - 1, 0)
                stopper = StopChecker(self.tokenizer, self.stops, self.eos, reqs[i].max_new_tokens)
                done = stopper.check(out[i], 0)
                if done is None:  # vLLM stopped before the engine's rule would: continue from there
                    if not toks:
                        raise RuntimeError(f"vLLM returned no token for a rollout of {n_prompt} tokens")
                    self.continued += 1
                    again.append(i)
                    continue
                cut, reason = done
                tokens = out[i][:cut]
                results[i] = Rollout(
                    tokens=tokens,
                    finish_reason=reason,
                    text=stopper.final_text(tokens, reason),
                    target_forwards=forwards[i],
                    target_tokens=computed[i],
                )
            todo = again
        return [r for r in results if r is not None]


class VLLMMiner(PipelinedMiner):
    """Algorithm 1 with rollouts on vLLM; ``config.inflight`` prompts batched per round.

    ``target_path`` is the target's local model directory (what vLLM loads; the same
    weights as ``target``). ``engine`` reuses a :class:`~autojudge.core.backends.vllm.engine.VLLMEngine`
    (its target-only vLLM engine); otherwise one is built (:func:`autojudge.core.backends.open_vllm`)
    with ``dtype``, ``max_model_len`` and ``kv_cache_gib``. :meth:`close` shuts it down when this miner built it.
    """

    def __init__(
        self,
        task: Task,
        target: torch.nn.Module,
        draft: torch.nn.Module,
        tokenizer: Any,
        config: MiningConfig,
        *,
        target_path: str | Path | None = None,
        engine: Any = None,
        dtype: str = "float32",
        max_model_len: int = 4096,
        kv_cache_gib: float = 1.0,
        on_event: EventHook | None = None,
        journal: Journal | None = None,
    ):
        if config.naive:
            raise ValueError("naive mining regenerates rollouts token by token: use the transformers backend")
        self._own_engine = engine is None
        if engine is None:
            from autojudge.core.backends import open_vllm

            if target_path is None:
                raise ValueError("VLLMMiner needs target_path (the target's model directory) or an engine")
            engine = open_vllm(
                target_path,
                None,
                dtype=dtype,
                max_model_len=max_model_len,
                max_num_seqs=max(config.inflight, 1),
                kv_cache_gib=kv_cache_gib,
                enable_prefix_caching=True,
            )
        self.vllm = engine
        rollouts = VLLMRollouts(
            engine.llm("ar"), tokenizer, task.stop_sequences, default_eos_ids(target, tokenizer)
        )
        super().__init__(
            task, target, draft, tokenizer, config, rollouts=rollouts, on_event=on_event, journal=journal,
            miner_factory=lambda: FeatureMiner(task, target, draft, tokenizer, config, backend="vllm"),
        )  # fmt: skip

    def close(self) -> None:
        if self._own_engine:
            self.vllm.close()
