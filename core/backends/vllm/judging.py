"""The judge's decision over one vLLM verification step, as plain torch (no vLLM import).

vLLM flattens the draft tokens of every request of a batch into one vector
(``draft_token_ids``, grouped by request; ``cu_num_draft_tokens`` = cumulative
counts). For each draft position this module decides, vectorised and on the
logits' device without a host synchronisation, whether the draft token is kept:

* it equals the target's greedy choice (lossless speculative decoding), or
* it differs, the request is *eligible* (greedy, no grammar, no penalties) and
  the judge calls the mismatch unimportant (``p_important < threshold``).

The caller turns "kept" into vLLM's output by raising the kept draft token's
logit above the row maximum, so vLLM's own greedy rejection kernel accepts the
longest kept prefix and then emits the target's token at the first position
that is not kept (or the bonus token): exactly the semantics of
:class:`autojudge.core.engine.SpeculativeEngine` in judged mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autojudge.core.judge import Judge, MismatchFeatures

#: counters accumulated on the device (read with :meth:`JudgeCounters.as_dict`)
COUNTER_NAMES = (
    "num_drafts",  # (request, verification step) pairs with draft tokens: vLLM's spec_decode_num_drafts
    "num_draft_tokens",
    "num_accepted_tokens",  # draft tokens accepted (matches + judge accepts)
    "num_verify_steps",  # rejection-sampler calls (batches verified)
    "num_judged_steps",  # ... of which the judge ran (some eligible request)
    "num_eligible_draft_tokens",  # draft tokens of eligible requests
    "num_mismatches_reached",  # eligible mismatches at or before each request's first rejection
    "num_judge_accepted",  # mismatching draft tokens accepted because of the judge (effective)
)


class JudgeCounters:
    """Device-side counters: adding to them never synchronises with the host.

    ``accepted_per_position[i]``: verifications that accepted draft position ``i``.
    """

    def __init__(self, device: torch.device | str = "cpu", max_positions: int = 1):
        self.values = torch.zeros(len(COUNTER_NAMES), dtype=torch.long, device=device)
        self.per_position = torch.zeros(max(1, max_positions), dtype=torch.long, device=device)

    def add(self, name: str, value: torch.Tensor | int) -> None:
        self.values[COUNTER_NAMES.index(name)] += value

    def add_verification(self, sampled: torch.Tensor, num_draft_tokens: list[int]) -> None:
        """Count one rejection-sampler output ``[batch, max_spec_len + 1]`` (-1 = placeholder)."""
        has = torch.tensor([n > 0 for n in num_draft_tokens], dtype=torch.bool, device=sampled.device)
        valid = (sampled != -1) & has.unsqueeze(1)
        accepted = valid[:, 1:]  # output position i + 1 holds a token only when draft i was accepted
        width = min(accepted.shape[1], self.per_position.shape[0])
        self.add("num_drafts", has.sum())
        self.add("num_draft_tokens", sum(num_draft_tokens))
        self.add("num_accepted_tokens", accepted.sum())
        self.per_position[:width] += accepted[:, :width].sum(0)

    def reset(self) -> None:
        self.values.zero_()
        self.per_position.zero_()

    def as_dict(self) -> dict[str, int | list[int]]:
        vals = self.values.tolist()
        out: dict[str, int | list[int]] = dict(zip(COUNTER_NAMES, (int(v) for v in vals), strict=True))
        out["accepted_per_position"] = [int(v) for v in self.per_position.tolist()]
        return out


@dataclass
class StepDecision:
    """What :func:`judge_step` decided for one verification step (all tensors ``[num_tokens]``)."""

    match: torch.Tensor  # draft == target argmax
    accept: torch.Tensor  # mismatch that the judge accepted (eligible requests only)
    effective: torch.Tensor  # position lies in the accepted prefix of its request
    reached: torch.Tensor  # eligible mismatch at or before the request's first rejection

    @property
    def kept(self) -> torch.Tensor:
        return self.match | self.accept


def token_request_index(
    cu_num_draft_tokens: torch.Tensor, num_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(request index, position within the request's window)`` of each flattened draft token."""
    cu = cu_num_draft_tokens.long()
    ar = torch.arange(num_tokens, device=cu.device)
    req = torch.searchsorted(cu, ar, right=True)
    starts = cu - torch.diff(cu, prepend=cu.new_zeros(1))
    return req, ar - starts[req]


def judge_step(
    judge: Judge,
    *,
    draft_tokens: torch.Tensor,
    raw_logits: torch.Tensor,
    processed_logits: torch.Tensor,
    target_hidden: torch.Tensor,
    cu_num_draft_tokens: torch.Tensor,
    eligible_requests: torch.Tensor,
    judge_positions: torch.Tensor | None = None,
) -> StepDecision:
    """Decide which draft tokens of one step are kept.

    ``raw_logits`` (the model's logits, for the judge's features, like the
    engine's) and ``processed_logits`` (after penalties/bad words/min-tokens:
    what greedy verification compares with) are ``[num_tokens, V]``;
    ``target_hidden[i]`` is the target's final hidden state at the position
    holding draft token ``i``; ``eligible_requests`` is ``[batch]`` bool.
    A draft token whose processed logit is ``-inf`` (forbidden by a constraint)
    is never accepted. ``judge_positions`` (``[batch]``, optional): the judge may
    accept only a request's first ``judge_positions[r]`` draft positions; later ones
    stay lossless. vLLM always verifies ``k`` drafts, while the engine proposes at most
    ``budget - 1`` in a request's last cycle so that its last token is the target's;
    limiting the judge to those positions makes the outputs identical at the budget.
    """
    n = draft_tokens.shape[0]
    d = draft_tokens.long()
    g = processed_logits.argmax(-1)
    match = d == g
    req, pos = token_request_index(cu_num_draft_tokens, n)
    eligible = eligible_requests.to(match.device)[req]
    if judge_positions is not None:
        eligible = eligible & (pos < judge_positions.to(match.device)[req])
    allowed = torch.isfinite(processed_logits.gather(-1, d.view(-1, 1)).squeeze(-1))
    feats = MismatchFeatures(
        draft_tokens=d,
        target_tokens=g,
        target_logits=raw_logits,
        target_hidden=target_hidden,
    )
    accept = judge.accept(feats).to(match.device) & ~match & eligible & allowed
    kept = match | accept
    # first position that is not kept, per request (the window length when all are kept)
    batch = eligible_requests.shape[0]
    cu = cu_num_draft_tokens.long()
    num_draft = torch.diff(cu, prepend=cu.new_zeros(1))
    bad_pos = torch.where(kept, num_draft[req], pos)
    first_bad = num_draft.clone().scatter_reduce(0, req, bad_pos, reduce="amin", include_self=True)[:batch]
    effective = pos < first_bad[req]
    reached = ~match & eligible & (pos <= first_bad[req])
    return StepDecision(match=match, accept=accept, effective=effective, reached=reached)


def force_accept(processed_logits: torch.Tensor, draft_tokens: torch.Tensor, accept: torch.Tensor) -> None:
    """In place: where ``accept``, make the draft token the row's strict argmax (max + 1)."""
    d = draft_tokens.long().view(-1, 1)
    own = processed_logits.gather(-1, d).squeeze(-1)
    top = processed_logits.max(-1).values
    processed_logits.scatter_(-1, d, torch.where(accept, top + 1.0, own).unsqueeze(-1))
