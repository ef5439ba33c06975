"""Choosing the draft length ``k`` from measured costs: ``aj decode -k auto``.

A speculative cycle with draft length ``k`` costs ``k`` draft steps plus one target
verify of ``k + 1`` tokens, and emits on average ``tau(k)`` tokens. With a per-token
acceptance probability ``alpha`` (greedy, independent positions: the usual model),
``tau(k) = (1 - alpha^(k+1)) / (1 - alpha)``. The best ``k`` maximises

    tokens per second  =  tau(k) / (k * c + v(k))

where ``c`` is the draft's 1-token step and ``v(k)`` the target's (k+1)-token verify,
both measured on this machine with these models (:func:`measure_costs`), and
``alpha`` is measured by decoding a few fixed prompts speculatively
(:func:`measure_acceptance`). Target-only decoding costs ``v(0)`` per token, so the
predicted speed-up of lossless SD over it is ``tau(k) v(0) / (k c + v(k))``.

Both measurements are cached in ``~/.cache/autojudge/kchoice.json`` under the pair's
fingerprints, dtype, quantisation, thread count and (for ``alpha``) the judge's
description, so the cost is paid once per machine and pair (about 10-30 s for the
Qwen pair on a 2-core CPU).

Limits: ``alpha`` is an average over the calibration prompts (acceptance varies by
task and position); the cost curve is measured at one context length
(``context`` tokens, default 256); the choice ignores the judge's own cost (tiny)
and assumes draft steps cost the same at every position.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from autojudge.core.files import atomic_write_json
from autojudge.core.paths import cache_dir
from autojudge.core.runner import ModelRunner

CACHE_FILE = "kchoice.json"
#: draft lengths considered by ``-k auto``
K_CANDIDATES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32)
#: prompts decoded to measure acceptance: short chat-style requests in the default pair's domains
CALIBRATION_PROMPTS = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Write a Python function `is_palindrome(s: str) -> bool` that ignores case and non-letters.",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
)


@dataclass
class CostCurve:
    """Seconds per draft 1-token step (``draft_step``) and per target pass of ``k + 1`` tokens (``verify[k]``)."""

    draft_step: float
    verify: dict[int, float]
    context: int

    def target_step(self) -> float:
        return self.verify[0]


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens a greedy cycle emits on average with per-token acceptance ``alpha`` and draft length ``k``."""
    if k <= 0:
        return 1.0
    if alpha >= 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def predicted_speedup(curve: CostCurve, alpha: float, k: int) -> float:
    """Predicted tokens/s of SD with draft length ``k`` over target-only decoding."""
    return expected_tokens(alpha, k) * curve.target_step() / (k * curve.draft_step + curve.verify[k])


def best_k(curve: CostCurve, alpha: float, candidates: Sequence[int] | None = None) -> tuple[int, float]:
    """``(k, predicted speed-up over target-only)`` maximising tokens per second among measured ``k``."""
    ks = [k for k in (candidates or sorted(curve.verify)) if k >= 1 and k in curve.verify]
    if not ks:
        raise ValueError("the cost curve holds no verify cost for k >= 1")
    return max(((k, predicted_speedup(curve, alpha, k)) for k in ks), key=lambda x: x[1])


def _interpolate(points: dict[int, float], k: int) -> float:
    if k in points:
        return points[k]
    ks = sorted(points)
    lo = max((x for x in ks if x < k), default=ks[0])
    hi = min((x for x in ks if x > k), default=ks[-1])
    if hi == lo:
        return points[lo]
    return points[lo] + (points[hi] - points[lo]) * (k - lo) / (hi - lo)


@torch.inference_mode()
def time_pass(runner: ModelRunner, prefix: torch.Tensor, tokens: int, reps: int) -> float:
    """Median seconds of feeding ``tokens`` tokens (logits included) after a cached ``prefix``.

    The cache is rolled back after each pass; the first pass is a warm-up. On CUDA the device is
    synchronized around each pass, so the time is the kernels', not their launch.
    """
    sync = torch.cuda.synchronize if runner.device.type == "cuda" else (lambda: None)
    runner.reset()
    runner.extend(prefix)
    n = runner.length
    feed = (
        prefix[:tokens] if tokens <= prefix.numel() else prefix.repeat(tokens // prefix.numel() + 1)[:tokens]
    )
    times = []
    for _ in range(reps + 1):
        sync()
        t0 = time.perf_counter()
        runner.logits(runner.extend(feed)).argmax(-1)
        sync()
        times.append(time.perf_counter() - t0)
        runner.crop(n)
    return sorted(times[1:])[len(times[1:]) // 2]


def measure_costs(
    target: torch.nn.Module,
    draft: torch.nn.Module,
    *,
    ks: Sequence[int] = K_CANDIDATES,
    context: int = 256,
    reps: int = 3,
) -> CostCurve:
    """Time the draft's 1-token step and the target's (k+1)-token passes after ``context`` cached tokens."""
    vocab = int(target.config.vocab_size)
    g = torch.Generator().manual_seed(0)
    dev = next(target.parameters()).device
    prefix = torch.randint(0, min(vocab, 30000), (context,), generator=g).to(dev)
    t_runner, d_runner = ModelRunner(target), ModelRunner(draft)
    measured = sorted({0, 1, 2, 4, 8, 16, 32, *[k for k in ks if k <= 8]})
    verify = {k: time_pass(t_runner, prefix, k + 1, reps) for k in measured if k <= max(ks)}
    draft_step = time_pass(d_runner, prefix, 1, reps)
    full = {k: _interpolate(verify, k) for k in sorted({0, *ks})}
    return CostCurve(draft_step=draft_step, verify=full, context=context)


def measure_acceptance(engine: Any, *, mode: str = "sd", judge: Any = None, k: int = 8,
                       prompts: Sequence[str] = CALIBRATION_PROMPTS, max_new_tokens: int = 96) -> float:  # fmt: skip
    """Per-token acceptance ``alpha`` of the pair (and judge) from speculative decoding of ``prompts``.

    Estimator: accepted tokens / (accepted tokens + cycles that ended in a rejection).
    """
    accepted = rejected = 0
    tok = engine.tokenizer
    for p in prompts:
        try:
            text = tok.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
        except (AttributeError, ValueError):  # a tokenizer without a chat template: the bare prompt
            text = p
        res = engine.generate(text, mode=mode, judge=judge, k=k, max_new_tokens=max_new_tokens)
        m = res.metrics
        for prop, acc in zip(m.proposed_per_cycle, m.accepted_per_cycle, strict=True):
            accepted += acc
            rejected += int(acc < prop)
    if accepted + rejected == 0:
        return 0.0
    return accepted / (accepted + rejected)


def _key(pair_key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(pair_key, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(data: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        atomic_write_json(cache_dir() / CACHE_FILE, data)


def choose_k(
    engine: Any,
    pair_key: dict[str, Any],
    *,
    mode: str = "sd",
    judge: Any = None,
    refresh: bool = False,
) -> dict[str, Any]:
    """``-k auto``: the measured (cached) cost curve and acceptance, the chosen ``k`` and its predicted speed-up.

    ``engine``: a :class:`~autojudge.core.engine.SpeculativeEngine` with a draft model;
    ``pair_key``: what identifies the measurement (fingerprints, dtype, quant, threads).
    """
    pair_key = {**pair_key, "threads": torch.get_num_threads()}
    cache = _read_cache()
    ck = _key(pair_key)
    entry = cache.get(ck) if not refresh else None
    if not isinstance(entry, dict) or "curve" not in entry:
        curve = measure_costs(engine.target_model, engine.draft_model)
        entry = {"pair": pair_key, "curve": asdict(curve), "alpha": {}}
    curve = CostCurve(
        draft_step=float(entry["curve"]["draft_step"]),
        verify={int(k): float(v) for k, v in entry["curve"]["verify"].items()},
        context=int(entry["curve"]["context"]),
    )
    judge_desc = json.dumps(judge.describe(), sort_keys=True, default=str) if judge is not None else "none"
    akey = f"{mode}:{hashlib.sha256(judge_desc.encode()).hexdigest()[:16]}"
    if akey not in entry["alpha"]:
        entry["alpha"][akey] = measure_acceptance(engine, mode=mode, judge=judge)
    alpha = float(entry["alpha"][akey])
    cache[ck] = entry
    _write_cache(cache)
    k, speedup = best_k(curve, alpha)
    return {"k": k, "predicted_speedup_vs_ar": speedup, "alpha": alpha, "draft_step_s": curve.draft_step,
            "verify_s": {str(x): curve.verify[x] for x in sorted(curve.verify)}}  # fmt: skip
