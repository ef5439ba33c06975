"""The judge inside vLLM's V1 model runner: a rejection sampler subclass and its installation.

Private vLLM API, pinned to :data:`autojudge.core.backends.vllm.VLLM_VERSION`
(``docs/vllm.md``). Hook points in vLLM 0.32 (V1 model runner, the one used on CPU):

* ``GPUModelRunner.sample_tokens`` unpacks ``execute_model_state`` (with
  ``sample_hidden_states``: the target's final hidden states, after the final
  norm, at the sampled positions) and the grammar bitmask, then calls
  ``_sample`` -> ``self.rejection_sampler(metadata, draft_probs, logits, sampling_metadata)``.
  :func:`install_judge_on_runner` wraps the runner *instance*'s ``sample_tokens``
  to hand the step's hidden states, batch order and structured-output requests
  to the sampler, and replaces ``runner.rejection_sampler`` with
  :class:`JudgedRejectionSampler`.
* ``RejectionSampler.forward`` clones the raw target logits of the draft
  positions and passes the clone through ``apply_logits_processors``; the
  subclass overrides that method: after vLLM's own processing it runs the judge
  (:func:`~autojudge.core.backends.vllm.judging.judge_step`) and raises the
  logit of each accepted mismatching draft token above the row maximum. vLLM's
  greedy kernel then accepts the longest kept prefix and emits the target's
  token at the first rejected position (or the bonus token) - the engine's
  semantics - and reported logprobs stay those of the raw logits (the default
  ``raw_logprobs`` mode).

Row ``i`` of the flattened draft tokens sits at sampled row
``target_logits_indices[i] + 1`` (the sampled rows of a request are
``[pending, d_1 .. d_m]``), so ``dt`` = ``sample_hidden_states[target_logits_indices + 1]``.

Only greedy requests (temperature 0) without grammar constraints and without
penalties are judged; the others, and any step without hidden states (dummy
runs), stay lossless.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from autojudge.core.backends.vllm.judging import JudgeCounters, force_accept, judge_step
from autojudge.core.judge import Judge

log = logging.getLogger(__name__)

_STEP_ATTR = "_autojudge_step"


def _rejection_sampler_base() -> type:
    from vllm.v1.sample.rejection_sampler import RejectionSampler

    return RejectionSampler


@functools.cache
def judged_sampler_class() -> type:
    """:class:`JudgedRejectionSampler`, built on first use so importing this module needs no vLLM."""
    base = _rejection_sampler_base()

    class JudgedRejectionSampler(base):  # type: ignore[misc, valid-type]
        """vLLM's rejection sampler with an AutoJudge judge at greedy verification."""

        judge: Judge | None = None
        counters: JudgeCounters

        def setup_judge(self, judge: Judge | None, device: torch.device, max_positions: int) -> None:
            self.judge = judge
            if not hasattr(self, "counters"):
                self.counters = JudgeCounters(device, max_positions)
            self._step: dict[str, Any] | None = None

        def forward(self, metadata, draft_probs, logits, sampling_metadata):  # noqa: ANN001
            out = super().forward(metadata, draft_probs, logits, sampling_metadata)
            if self._step is not None:  # a real step (dummy/warm-up runs have none)
                self.counters.add("num_verify_steps", 1)
                self.counters.add_verification(out.sampled_token_ids, metadata.num_draft_tokens)
            return out

        def set_step(self, step: dict[str, Any] | None) -> None:
            self._step = step

        def apply_logits_processors(self, logits, sampling_metadata, metadata):  # noqa: ANN001
            raw = logits.clone() if self.judge is not None else None
            processed = super().apply_logits_processors(logits, sampling_metadata, metadata)
            if raw is None or metadata.draft_token_ids.numel() == 0:
                return processed
            step = self._step
            if step is None:
                return processed
            hidden = step.get("hidden")
            n = metadata.draft_token_ids.shape[0]
            if hidden is None or sampling_metadata.all_random:
                return processed
            rows = metadata.target_logits_indices.long() + 1
            if hidden.shape[0] < n + len(metadata.num_draft_tokens):
                log.warning("autojudge: hidden states do not cover the draft tokens; step left lossless")
                return processed
            eligible = _eligible_requests(
                sampling_metadata, step, len(metadata.num_draft_tokens), processed.device
            )
            if eligible is None:
                return processed
            positions = step.get("judge_positions")
            if positions is not None and len(positions) >= len(metadata.num_draft_tokens):
                positions = torch.tensor(positions[: len(metadata.num_draft_tokens)], device=processed.device)
            else:
                positions = None
            decision = judge_step(
                self.judge,
                draft_tokens=metadata.draft_token_ids,
                raw_logits=raw,
                processed_logits=processed,
                target_hidden=hidden[rows],
                cu_num_draft_tokens=metadata.cu_num_draft_tokens,
                eligible_requests=eligible,
                judge_positions=positions,
            )
            force_accept(processed, metadata.draft_token_ids, decision.accept)
            c = self.counters
            c.add("num_judged_steps", 1)
            req_tokens = torch.tensor(metadata.num_draft_tokens, device=eligible.device)
            c.add("num_eligible_draft_tokens", (req_tokens * eligible).sum())
            c.add("num_mismatches_reached", decision.reached.sum())
            c.add("num_judge_accepted", (decision.accept & decision.effective).sum())
            return processed

    JudgedRejectionSampler.__qualname__ = "JudgedRejectionSampler"
    JudgedRejectionSampler.__module__ = __name__
    return JudgedRejectionSampler


def _eligible_requests(
    sampling_metadata: Any, step: dict[str, Any], batch: int, device: torch.device
) -> torch.Tensor | None:
    """``[batch]`` bool: greedy, no grammar, no penalties; None when no request qualifies."""
    eligible = torch.ones(batch, dtype=torch.bool, device=device)
    if not sampling_metadata.all_greedy:
        temp = sampling_metadata.temperature
        if temp is None:
            return None
        eligible &= temp[:batch].to(device) == 0
    if not sampling_metadata.no_penalties:
        eligible &= sampling_metadata.frequency_penalties[:batch].to(device) == 0
        eligible &= sampling_metadata.presence_penalties[:batch].to(device) == 0
        eligible &= sampling_metadata.repetition_penalties[:batch].to(device) == 1
    grammar = step.get("grammar_req_ids") or ()
    if grammar:
        req_ids = step.get("req_ids") or []
        mask = [rid not in grammar for rid in req_ids[:batch]]
        if len(mask) != batch:  # cannot tell which rows are constrained: judge nobody
            return None
        eligible &= torch.tensor(mask, dtype=torch.bool, device=device)
    return eligible


def install_judge_on_runner(runner: Any, judge: Judge | None) -> Any:
    """Put ``judge`` into ``runner`` (a vLLM V1 ``GPUModelRunner``/``CPUModelRunner``); None = lossless.

    Idempotent: the first call swaps in :class:`JudgedRejectionSampler` and
    wraps the instance's ``sample_tokens``; later calls only change the judge.
    Returns the sampler.
    """
    if getattr(runner, "speculative_config", None) is None or not hasattr(runner, "rejection_sampler"):
        raise RuntimeError(
            "the vLLM engine has no speculative decoding: start it with a speculative_config "
            "(e.g. {'method': 'draft_model', 'model': DRAFT, 'num_speculative_tokens': K})"
        )
    cls = judged_sampler_class()
    sampler = runner.rejection_sampler
    if not isinstance(sampler, cls):
        old = sampler
        sampler = cls(old.sampler, runner.speculative_config, runner.device)
        if getattr(old, "synthetic_mode", False):
            raise RuntimeError("autojudge does not combine with vLLM's synthetic rejection sampling")
        runner.rejection_sampler = sampler
        _wrap_sample_tokens(runner, sampler)
    if judge is not None:
        from autojudge.core.backends.vllm.worker import check_vllm_features

        check_vllm_features(judge)
        to = getattr(judge, "to", None)
        if callable(to):
            to(runner.device)
    sampler.setup_judge(judge, runner.device, int(runner.speculative_config.num_speculative_tokens))
    return sampler


def _judge_positions(runner: Any) -> list[int] | None:
    """Per request of the batch: how many leading draft positions the judge may accept.

    ``max_tokens - len(output) - 1``: the engine proposes at most that many drafts in a
    request's last cycle, so its last token is always the target's; positions beyond stay
    lossless here too (vLLM verifies ``k`` drafts and cuts at ``max_tokens``). ``None``
    (no limit) when the runner's request states are not what vLLM 0.32 keeps.
    """
    try:
        out = []
        for rid in runner.input_batch.req_ids:
            st = runner.requests[rid]
            max_tokens = st.sampling_params.max_tokens if st.sampling_params is not None else None
            out.append(1 << 30 if max_tokens is None else max(0, max_tokens - len(st.output_token_ids) - 1))
        return out
    except (AttributeError, KeyError, TypeError):
        return None


def _wrap_sample_tokens(runner: Any, sampler: Any) -> None:
    original = runner.sample_tokens

    @functools.wraps(original)
    def sample_tokens(grammar_output: Any) -> Any:
        state = getattr(runner, "execute_model_state", None)
        step = None
        if state is not None:
            step = {
                "hidden": state.sample_hidden_states,
                "req_ids": list(runner.input_batch.req_ids),
                # a Python pass over the batch: only when a judge can use it
                "judge_positions": _judge_positions(runner) if sampler.judge is not None else None,
                "grammar_req_ids": frozenset(grammar_output.structured_output_request_ids)
                if grammar_output is not None
                else frozenset(),
            }
        sampler.set_step(step)
        try:
            return original(grammar_output)
        finally:
            sampler.set_step(None)

    runner.sample_tokens = sample_tokens
    setattr(runner, _STEP_ATTR, True)
