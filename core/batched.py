"""Batched greedy speculative decoding: the :class:`~autojudge.core.engine.SpeculativeEngine` loop
over many prompts at once, every model pass running all live rows in one forward.

Why: on a CPU a target pass over one row is bound by streaming the weights
(~8 GFLOP/s at M=1 in fp32) while the same GEMMs reach 50-105 GFLOP/s at
M=16-64 rows. Batching rows turns weight streaming into compute.

A cycle is the batch-1 cycle, row by row, with each stage fused across rows:

1. the draft model proposes ``m_b <= k`` tokens per row (``m_b`` shrinks near a
   row's token budget): one draft forward per proposal step for all rows;
2. the target verifies ``[pending_b, d_b1..d_bm]`` for all rows in one forward;
3. the judge is called once with one :class:`~autojudge.core.judge.MismatchFeatures`
   batch holding every row's undecided window positions (from its first
   mismatch on), hidden states taken where the batch-1 engine takes them. With
   ``dd`` features the rows' last positions are left to a second call: their
   draft hidden states cost one more draft step, taken only for the rows whose
   earlier mismatches were all accepted;
4. each row emits its accepted drafts plus the target's token; both caches
   roll back per row to that row's accepted prefix.

Rows that finish (EOS, stop sequence, ``max_new_tokens``: the batch-1
:class:`~autojudge.core.engine.StopChecker` rules) leave the batch, and queued
prompts are admitted into the freed slots (continuous batching, ``max_batch``).

The KV cache (:class:`BatchedRunner`): one ``DynamicCache`` of shape
``[B, heads, S, head_dim]`` whose ``S`` slots are shared by all rows, plus a
per-row slot mask and per-row token positions. Each pass appends ``T`` slots to
every row (ragged inputs are right-padded); padding and rejected tokens stay as
*holes*, masked out of attention by a 2-D attention mask, and explicit per-row
``position_ids`` keep RoPE positions exact. Rollback is a mask update; the
cache is compacted (holes squeezed out by one gather) when holes exceed the
live tokens. See docs/engine.md, "Batched decoding".

Invariant (tested): every row equals the batch-1 engine's output for that
prompt, token for token, with the same per-row cycle metrics (float32).

Limits: greedy only; draft-model drafters only (no lookup drafters); full
attention layers only (no sliding-window cache); one ``k`` for all rows.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from autojudge.core.engine import GenerationResult, StopChecker, check_mode, default_eos_ids, encode
from autojudge.core.judge import Judge, MismatchFeatures
from autojudge.core.metrics import GenerationMetrics
from autojudge.core.runner import UnsupportedModelError, model_parts

PAD_ID = 0  # token fed in padding slots (any valid id: its outputs are discarded, its slot is a hole)

#: attention kernel of batched passes feeding at most FAST_ATTENTION_MAX_T tokens per row (see grouped_attention)
FAST_ATTENTION = "autojudge_grouped"
FAST_ATTENTION_MAX_T = 64
#: model types whose attention is plain scaled-dot-product with grouped KV heads (no soft-capping, no sliding window)
FAST_ATTENTION_MODELS = frozenset({"llama", "qwen2", "qwen3", "mistral"})


def grouped_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention for a few new tokens per row over a long, holed cache: two batched matmuls per layer.

    PyTorch's CPU SDPA kernel with an explicit mask took 46% of a 32-row 1-token
    pass of the Qwen 1.5B target (bf16, 300 cached tokens) for ~1% of its FLOPs.
    Here the query heads sharing a KV head are stacked into one matrix (no
    ``repeat_kv`` copy), scores and softmax run in float32, and the mask is
    :func:`transformers.masking_utils.sdpa_mask`'s boolean mask. Float32 outputs
    equal SDPA's to ~1e-6 (tested); inference only (no dropout).
    """
    B, H, T, d = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    g = H // Hkv
    scale = scaling if scaling is not None else d**-0.5
    scores = torch.matmul(query.reshape(B, Hkv, g * T, d), key.transpose(-1, -2)).float() * scale
    if (
        attention_mask is None and T > 1
    ):  # the mask was skipped as plain causal: new token t sees slots <= S - T + t
        slots = torch.arange(S, device=query.device)
        attention_mask = (slots[None, :] <= (S - T + torch.arange(T, device=query.device))[:, None])[
            None, None
        ]
    if attention_mask is not None:
        scores = scores.view(B, Hkv, g, T, S)
        mask = attention_mask[..., -S:][:, :, None]  # [B, 1, 1, T, S]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
        scores = scores.view(B, Hkv, g * T, S)
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value).view(B, H, T, d).transpose(1, 2).contiguous()
    return out, None


def _register_fast_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(FAST_ATTENTION, grouped_attention)
    AttentionMaskInterface.register(FAST_ATTENTION, sdpa_mask)


_register_fast_attention()


class BatchedRunner:
    """One causal LM plus a batched KV cache with per-row lengths and per-row rollback.

    State: ``cache`` (``[B, heads, S, d]`` per layer), ``valid`` (``[B, S]`` bool:
    slot holds a live token of that row), ``pos`` (``[B, S]`` long: the token's
    position in its row, ``-1`` for a hole) and ``length`` (``[B]``: tokens
    each row holds; the valid slots of a row hold positions ``0..length-1`` in
    slot order).
    """

    def __init__(self, model: torch.nn.Module, *, compact_slack: int = 32, fast_attention: bool = True):
        self.model = model
        self.decoder, self.lm_head, self.device = model_parts(model)
        self.compact_slack = compact_slack
        cfg = model.config
        # CPU only: CUDA's SDPA kernels are the fast path there
        self.fast_attention = (
            fast_attention
            and self.device.type == "cpu"
            and getattr(cfg, "model_type", None) in FAST_ATTENTION_MODELS
            and getattr(cfg, "_attn_implementation", None) in ("sdpa", "eager")
            and not getattr(cfg, "use_sliding_window", False)
        )
        self.reset(0)

    # -- state ---------------------------------------------------------------------
    def reset(self, batch_size: int = 0) -> None:
        self.cache = DynamicCache(config=self.model.config)
        self.valid = torch.zeros(batch_size, 0, dtype=torch.bool, device=self.device)
        self.pos = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)
        self.length = torch.zeros(batch_size, dtype=torch.long, device=self.device)

    @property
    def batch_size(self) -> int:
        return int(self.length.shape[0])

    @property
    def slots(self) -> int:
        return int(self.valid.shape[1])

    def _layers(self) -> list[DynamicLayer]:
        layers = [layer for layer in self.cache.layers if getattr(layer, "is_initialized", False)]
        for layer in layers:
            if type(layer) is not DynamicLayer:
                raise UnsupportedModelError(
                    f"batched decoding needs full-attention layers, got {type(layer).__name__}"
                )
        return layers

    # -- model passes ------------------------------------------------------------------
    @torch.inference_mode()
    def extend(self, tokens: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` ``[B, T]`` where row ``b`` holds ``n[b]`` real tokens followed by padding;
        returns the hidden states ``[B, T, H]`` (rows' padding positions hold garbage)."""
        B, T = tokens.shape
        assert self.batch_size == B, (B, self.batch_size)
        steps = torch.arange(T, device=self.device)
        new_valid = steps[None, :] < n[:, None]
        # padding slots reuse the row's last real position: finite RoPE inputs, never attended to
        new_pos = self.length[:, None] + torch.minimum(steps[None, :], (n[:, None] - 1).clamp(min=0))
        mask = torch.cat([self.valid, new_valid], dim=1)
        cfg = self.model.config
        saved = cfg._attn_implementation
        if self.fast_attention and T <= FAST_ATTENTION_MAX_T:
            cfg._attn_implementation = FAST_ATTENTION  # this pass only; batch-1 runners keep theirs
        try:
            out = self.decoder(
                input_ids=tokens,
                attention_mask=mask.long(),
                position_ids=new_pos,
                past_key_values=self.cache,
                use_cache=True,
            )
        finally:
            cfg._attn_implementation = saved
        self.valid = mask
        self.pos = torch.cat([self.pos, torch.where(new_valid, new_pos, -1)], dim=1)
        self.length = self.length + n
        return out.last_hidden_state

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    # -- cache surgery -------------------------------------------------------------------
    def crop(self, lengths: torch.Tensor) -> None:
        """Row ``b`` keeps only its first ``lengths[b]`` tokens (no-op for rows not longer)."""
        self.valid = self.valid & (self.pos < lengths[:, None])
        self.pos = torch.where(self.valid, self.pos, -1)
        self.length = torch.minimum(self.length, lengths)
        # trailing slots that are holes in every row are dropped for free (a view)
        cols = self.valid.any(0).nonzero()
        keep = int(cols[-1]) + 1 if cols.numel() else 0
        if keep < self.slots:
            self._slice_slots(keep)
        longest = int(self.length.max()) if self.batch_size else 0
        if self.slots > 2 * longest + self.compact_slack:
            self.compact()

    def _slice_slots(self, keep: int) -> None:
        for layer in self._layers():
            layer.keys = layer.keys[:, :, :keep]
            layer.values = layer.values[:, :, :keep]
        self.valid, self.pos = self.valid[:, :keep], self.pos[:, :keep]

    def compact(self) -> None:
        """Squeeze holes out: each row's live tokens move to the last ``max(length)`` slots, in order."""
        if self.batch_size == 0:
            return
        S, width = self.slots, int(self.length.max())
        slot = torch.arange(S, device=self.device)
        # holes sort first, live slots after them in slot (= position) order
        order = torch.where(self.valid, slot + 1, 0).argsort(dim=1, stable=True)[:, S - width :]
        for layer in self._layers():
            idx = order[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys = layer.keys.gather(2, idx)
            layer.values = layer.values.gather(2, idx)
        self.valid = self.valid.gather(1, order)
        self.pos = self.pos.gather(1, order)

    def select(self, rows: torch.Tensor | Sequence[int]) -> None:
        """Keep only ``rows`` (in that order)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        for layer in self._layers():
            layer.keys = layer.keys[rows]
            layer.values = layer.values[rows]
        self.valid, self.pos, self.length = self.valid[rows], self.pos[rows], self.length[rows]
        if self.batch_size == 0:
            self.reset(0)

    def merge(self, other: BatchedRunner) -> None:
        """Append ``other``'s rows after this runner's (same model); the shorter side gets leading holes."""
        if other.batch_size == 0:
            return
        if self.batch_size == 0:
            self.cache, self.valid, self.pos, self.length = other.cache, other.valid, other.pos, other.length
            return
        S = max(self.slots, other.slots)
        mine, theirs = self._layers(), other._layers()
        assert len(mine) == len(theirs)

        def lpad(t: torch.Tensor, dim: int, value: float | bool | int) -> torch.Tensor:
            extra = S - t.shape[dim]
            if extra == 0:
                return t
            shape = list(t.shape)
            shape[dim] = extra
            return torch.cat([torch.full(shape, value, dtype=t.dtype, device=t.device), t], dim=dim)

        for a, b in zip(mine, theirs, strict=True):
            a.keys = torch.cat([lpad(a.keys, 2, 0.0), lpad(b.keys, 2, 0.0)], dim=0)
            a.values = torch.cat([lpad(a.values, 2, 0.0), lpad(b.values, 2, 0.0)], dim=0)
        self.valid = torch.cat([lpad(self.valid, 1, False), lpad(other.valid, 1, False)], dim=0)
        self.pos = torch.cat([lpad(self.pos, 1, -1), lpad(other.pos, 1, -1)], dim=0)
        self.length = torch.cat([self.length, other.length])


def _ragged(rows: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[B, T]`` tokens and ``[B]`` lengths."""
    n = [len(r) for r in rows]
    width = max(n, default=0)
    tokens = torch.full((len(rows), max(width, 1)), PAD_ID, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            tokens[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return tokens.to(device), torch.tensor(n, dtype=torch.long, device=device)


@dataclass
class _Row:
    index: int  # position in the caller's prompt list
    prompt: list[int]
    met: GenerationMetrics
    t_start: float
    out: list[int] = field(default_factory=list)
    prefill_hidden: torch.Tensor | None = None
    done: tuple[int, str] | None = None


class BatchedEngine:
    """Greedy speculative decoding of many prompts at once (modes ``ar``, ``sd``, ``judge``).

    Same models and semantics as :class:`~autojudge.core.engine.SpeculativeEngine`
    (draft-model drafter only); see the module docstring.
    """

    def __init__(
        self,
        target: torch.nn.Module,
        draft: torch.nn.Module | None = None,
        tokenizer: Any | None = None,
        *,
        compact_slack: int = 32,
    ):
        self.target_model = target
        self.compact_slack = compact_slack  # see BatchedRunner
        self.draft_model = draft
        self.tokenizer = tokenizer
        self.device = next(target.parameters()).device
        self._eos_default = default_eos_ids(target, tokenizer)
        self._cuda = self.device.type == "cuda"

    def _clock(self) -> float:
        if self._cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        return encode(self.tokenizer, prompt)

    def _check_mode(self, mode: str, judge: Judge | None) -> Judge | None:
        check_mode(mode)
        if mode == "ar":
            return None
        if self.draft_model is None:
            raise ValueError(f"mode {mode!r} needs a draft model")
        if mode == "sd":
            return None
        if judge is None:
            raise ValueError("mode 'judge' needs a judge")
        return judge

    # -- judging ---------------------------------------------------------------------------
    @staticmethod
    def _decide(
        judge: Judge,
        mask: torch.Tensor,
        d: torch.Tensor,
        g: torch.Tensor,
        logits: torch.Tensor,
        h: torch.Tensor,
        d_hidden: torch.Tensor | None,
        match: torch.Tensor,
    ) -> torch.Tensor:
        """Accept decisions (match or judged unimportant) for the window positions in ``mask`` ``[B, M]``, row-major."""
        bi, ii = mask.nonzero(as_tuple=True)
        if bi.numel() == 0:
            return torch.zeros(0, dtype=torch.bool, device=mask.device)
        feats = MismatchFeatures(
            draft_tokens=d[bi, ii],
            target_tokens=g[bi, ii],
            target_logits=logits[bi, ii],
            target_hidden=h[bi, ii + 1],  # the position holding the draft token
            draft_hidden=d_hidden[bi, ii] if d_hidden is not None else None,
        )
        return match[bi, ii] | judge.accept(feats).to(mask.device)

    # -- admission -------------------------------------------------------------------------
    def _admit(
        self, rows: list[_Row], target: BatchedRunner, draft: BatchedRunner | None, stopper: StopChecker
    ) -> list[_Row]:
        """Prefill new rows (one target pass, one draft pass) and merge those not already finished."""
        t0 = self._clock()
        tokens, n = _ragged([r.prompt for r in rows], self.device)
        new_t = BatchedRunner(self.target_model, compact_slack=self.compact_slack)
        new_t.reset(len(rows))
        h = new_t.extend(tokens, n)
        last = h[torch.arange(len(rows), device=self.device), n - 1]
        first = target.logits(last).argmax(-1).tolist()
        t1 = self._clock()
        for i, r in enumerate(rows):
            r.prefill_hidden = last[i].clone()
            r.out = [int(first[i])]
            r.met.num_target_forwards, r.met.num_target_tokens = 1, len(r.prompt)
            r.met.prefill_time = t1 - t0
            r.done = stopper.check(r.out, 0)
        keep = [i for i, r in enumerate(rows) if r.done is None]
        if not keep:
            return []
        if len(keep) < len(rows):
            new_t.select(keep)
            tokens, n = tokens[keep], n[keep]
        target.merge(new_t)
        if draft is not None:
            # the draft reads the prompts now, so the first proposal step feeds one token per row
            new_d = BatchedRunner(self.draft_model, compact_slack=self.compact_slack)
            new_d.reset(len(keep))
            new_d.extend(tokens, n)
            draft.merge(new_d)
            t2 = self._clock()
            for i in keep:
                rows[i].met.prefill_time += t2 - t1
        return [rows[i] for i in keep]

    # -- the loop ------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_batch(
        self,
        prompts: Sequence[str | Sequence[int]],
        *,
        mode: str = "sd",
        judge: Judge | None = None,
        k: int = 5,
        max_new_tokens: int = 256,
        stop_sequences: Sequence[str] = (),
        eos_token_ids: Iterable[int] | None = None,
        max_batch: int | None = None,
        on_result: Callable[[int, GenerationResult], None] | None = None,
    ) -> list[GenerationResult]:
        """Generate greedily from every prompt; one result per prompt, in order.

        At most ``max_batch`` rows (default: all prompts) decode at once; queued
        prompts take the slots of rows that finish. Per-row metrics count as the
        batch-1 engine counts them; shared pass times are charged to every row
        that took part in the pass. ``on_result(index, result)`` is called as soon
        as a row finishes (rows finish in any order), e.g. to save it or report progress.
        """
        if k < 1 and mode != "ar":
            raise ValueError("draft length k must be >= 1")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if max_batch is not None and max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        judge = self._check_mode(mode, judge)
        ids = [self.encode(p) for p in prompts]
        if any(not p for p in ids):
            raise ValueError("empty prompt")
        eos = self._eos_default if eos_token_ids is None else set(eos_token_ids)
        stopper = StopChecker(self.tokenizer, stop_sequences, eos, max_new_tokens)
        max_batch = max_batch or max(len(ids), 1)
        dev = self.device

        target = BatchedRunner(self.target_model, compact_slack=self.compact_slack)
        draft = BatchedRunner(self.draft_model, compact_slack=self.compact_slack) if mode != "ar" else None
        queue = deque(range(len(ids)))
        live: list[_Row] = []
        results: list[GenerationResult | None] = [None] * len(ids)

        def finish(r: _Row) -> None:
            assert r.done is not None
            cut, reason = r.done
            met = r.met
            if len(r.out) > cut and met.emitted_per_cycle:  # tokens past the stop point were never emitted
                met.emitted_per_cycle[-1] -= len(r.out) - cut
            out = r.out[:cut]
            met.num_output_tokens = len(out)
            met.wall_time = self._clock() - r.t_start
            results[r.index] = GenerationResult(
                tokens=out,
                text=stopper.final_text(out, reason),
                finish_reason=reason,
                metrics=met,
                prompt_tokens=r.prompt,
                prefill_hidden=r.prefill_hidden,
            )
            if on_result is not None:
                on_result(r.index, results[r.index])

        while queue or live:
            if queue and len(live) < max_batch:
                t_adm = self._clock()
                new = []
                while queue and len(live) + len(new) < max_batch:
                    i = queue.popleft()
                    new.append(_Row(i, ids[i], GenerationMetrics(num_prompt_tokens=len(ids[i])), t_adm))
                admitted = self._admit(new, target, draft, stopper)
                for r in new:
                    if r.done is not None:
                        finish(r)
                live.extend(admitted)
                continue  # admitted rows may all have finished; refill before decoding
            B = len(live)
            seq_len = torch.tensor([len(r.prompt) + len(r.out) for r in live], dtype=torch.long, device=dev)
            ms = [min(k, max_new_tokens - len(r.out) - 1) if mode != "ar" else 0 for r in live]
            M = max(ms)
            m = torch.tensor(ms, dtype=torch.long, device=dev)
            rows = torch.arange(B, device=dev)

            # 1. propose: one draft forward per proposal step, all rows
            t0 = self._clock()
            d = torch.full((B, max(M, 1)), PAD_ID, dtype=torch.long, device=dev)
            d_hidden: torch.Tensor | None = None
            if M > 0:
                assert draft is not None
                dlen = draft.length.tolist()
                feeds = [(r.prompt + r.out)[dlen[b] :] if ms[b] > 0 else [] for b, r in enumerate(live)]
                tokens, n = _ragged(feeds, dev)
                h = draft.extend(tokens, n)
                nxt = draft.logits(h[rows, (n - 1).clamp(min=0)]).argmax(-1)
                d[:, 0] = nxt
                hs = []
                for i in range(1, M):
                    n = (m > i).long()
                    h = draft.extend(d[:, i - 1 : i], n)[:, 0]
                    hs.append(h)  # state at the position holding proposal i-1
                    d[:, i] = draft.logits(h).argmax(-1)
                if judge is not None and judge.needs_draft_hidden:
                    width = self.draft_model.config.hidden_size
                    d_hidden = torch.zeros(B, M, width, dtype=h.dtype, device=dev)
                    if hs:
                        d_hidden[:, : M - 1] = torch.stack(hs, dim=1)
            t1 = self._clock()

            # 2. verify: one target pass over [pending, d_1..d_m] of every row
            pending = torch.tensor([r.out[-1] for r in live], dtype=torch.long, device=dev)
            verify_in = torch.cat([pending[:, None], d[:, :M]], dim=1)
            steps = torch.arange(M + 1, device=dev)
            verify_in = torch.where(steps[None, :] <= m[:, None], verify_in, PAD_ID)
            h = target.extend(verify_in, m + 1)
            logits = target.logits(h)
            g = logits.argmax(-1)  # [B, M+1]
            match = (d[:, :M] == g[:, :M]) & (steps[None, :M] < m[:, None])
            n_acc = match.long().cumprod(1).sum(1)
            t2 = self._clock()

            # 3. judge: one call with every row's undecided window positions
            judged = (n_acc < m) if judge is not None else torch.zeros(B, dtype=torch.bool, device=dev)
            n_judged = torch.zeros(B, dtype=torch.long, device=dev)
            if judge is not None and bool(judged.any()):
                und = (steps[None, :M] >= n_acc[:, None]) & (steps[None, :M] < m[:, None])  # [B, M]
                ok = torch.zeros(B, max(M, 1), dtype=torch.bool, device=dev)
                is_last = steps[None, :M] == (m[:, None] - 1)
                # the draft's hidden state at a row's last proposal costs an extra draft step: the other
                # positions are judged first, and the step is taken for the rows whose decision reaches it
                first = und & ~is_last if d_hidden is not None else und
                ok[first] = self._decide(judge, first, d, g, logits, h, d_hidden, match)
                if d_hidden is not None:
                    assert draft is not None
                    last_i = (m - 1).clamp(min=0)
                    reach = torch.where(first, ok, True).all(1) & judged
                    needs = reach & ~match[rows, last_i]
                    ok[rows, last_i] |= reach & ~needs  # a last position that matches
                    if bool(needs.any()):
                        hl = draft.extend(d[rows, last_i][:, None], needs.long())[:, 0]
                        d_hidden[rows[needs], m[needs] - 1] = hl[needs]
                        at_last = is_last & needs[:, None]
                        ok[at_last] = self._decide(judge, at_last, d, g, logits, h, d_hidden, match)
                ok_run = torch.where(und, ok, True).long().cumprod(1) & und.long()
                extra = ok_run.sum(1)
                n_judged = extra - (match & ok_run.bool()).long().sum(1)
                n_acc = n_acc + extra
            t3 = self._clock()

            # 4. emit, roll both caches back per row to the accepted prefix
            keep_len = seq_len + n_acc
            target.crop(keep_len)
            if draft is not None:
                draft.crop(keep_len)
            d_l, g_l, acc_l = d.tolist(), g.tolist(), n_acc.tolist()
            judged_l, nj_l = judged.tolist(), n_judged.tolist()
            keep: list[int] = []
            for b, r in enumerate(live):
                a = acc_l[b]
                new_tokens = d_l[b][:a] + [g_l[b][a]]
                start = len(r.out)
                r.out.extend(new_tokens)
                r.done = stopper.check(r.out, start)
                met = r.met
                met.num_drafts += 1
                met.num_target_forwards += 1
                met.num_target_tokens += ms[b] + 1
                met.num_draft_tokens += ms[b]
                met.num_accepted_tokens += a
                met.num_judge_accepted += nj_l[b]
                met.num_judge_calls += int(judged_l[b])
                met.proposed_per_cycle.append(ms[b])
                met.accepted_per_cycle.append(a)
                met.emitted_per_cycle.append(len(new_tokens))
                met.draft_time += t1 - t0
                met.target_time += t2 - t1
                met.judge_time += t3 - t2
                if r.done is not None:
                    finish(r)
                else:
                    keep.append(b)
            if len(keep) < B:
                target.select(keep)
                if draft is not None:
                    draft.select(keep)
                live = [live[b] for b in keep]

        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]
