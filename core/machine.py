"""Measured facts about this machine that choose defaults: which float dtype runs GEMMs faster.

On CPUs with bfloat16 dot-product units (``avx512_bf16``, AMX) bfloat16 linears are
several times faster than float32 once a pass feeds a few rows (measured on a 2-core
AMD EPYC with avx512_bf16: 237 vs 50 GFLOP/s at 32 rows); on CPUs without them
bfloat16 is conversion-bound and float32 wins (measured on AVX2-only machines). So
the choice is measured, not guessed from flags: :func:`preferred_dtype` times
a linear layer in both dtypes at 1 and 32 rows on the target's MLP shape (about a
second; bfloat16 with its weight packed for oneDNN where loaded models are,
:mod:`autojudge.core.packed_linear`) and caches the result per CPU model, flags, torch
version and thread count in ``~/.cache/autojudge/machine.json``.

Rule: bfloat16 when it is at least as fast at 32 rows (batched mining, batched
evaluation, verify windows) and not more than 1.25x slower at 1 row; else float32.
GPUs always get bfloat16 (float16 where bfloat16 is unsupported, see
:func:`autojudge.core.models.resolve_dtype`).

Limits: a measurement taken while other jobs load the CPU is noisier (both dtypes are
timed interleaved, so the ratio holds better than the absolute figures); delete the
cache file to measure again.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from autojudge.core.files import atomic_write_json
from autojudge.core.packed_linear import can_pack, pack_linears_
from autojudge.core.paths import cache_dir

CACHE_FILE = "machine.json"
#: the shape measured: a 1.5B-class model's MLP up-projection (hidden 1536 -> 4096)
SHAPE = (1536, 4096)


def _cpu_key() -> str:
    model, flags = platform.processor() or "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = " ".join(
                        sorted(x for x in line.split(":", 1)[1].split() if "avx" in x or "amx" in x)
                    )
                    break
    except OSError:
        pass
    packed = "|packed bf16 linears" if can_pack(torch.bfloat16, "cpu") else ""
    return f"{model}|{flags}|torch {torch.__version__}|threads {torch.get_num_threads()}{packed}"


def gemm_gflops(
    dtype: torch.dtype, rows: int, *, shape: tuple[int, int] = SHAPE, seconds: float = 0.15
) -> float:
    """GFLOP/s of a linear layer on ``rows`` x ``shape`` in ``dtype`` (timed for about ``seconds``).

    The layer is the one loaded models run: ``nn.Linear`` passed through
    :func:`~autojudge.core.packed_linear.pack_linears_`, so packed where loading would pack it.
    """
    k, n = shape
    x = torch.randn(rows, k, dtype=dtype)
    layer = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False, dtype=dtype).requires_grad_(False))
    pack_linears_(layer)
    with torch.inference_mode():
        layer(x)
        reps, t0 = 0, time.perf_counter()
        while True:
            layer(x)
            reps += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds and reps >= 3:
                return 2 * rows * k * n * reps / elapsed / 1e9


def measure() -> dict[str, Any]:
    """GFLOP/s of float32 and bfloat16 linears at 1 and 32 rows, and the dtype the rule picks."""
    out: dict[str, Any] = {}
    for rows in (1, 32):
        for dt in (torch.float32, torch.bfloat16):
            out[f"{str(dt).replace('torch.', '')}@{rows}"] = round(gemm_gflops(dt, rows), 1)
    bf_batched = out["bfloat16@32"] >= out["float32@32"]
    bf_single = out["bfloat16@1"] * 1.25 >= out["float32@1"]
    out["preferred"] = "bfloat16" if bf_batched and bf_single else "float32"
    return out


def _cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def machine_facts(*, refresh: bool = False) -> dict[str, Any]:
    """:func:`measure`'s result for this CPU, from the cache when it holds one."""
    key = _cpu_key()
    path = _cache_path()
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached, dict):
        cached = {}
    if not refresh and isinstance(cached.get(key), dict) and "preferred" in cached[key]:
        return cached[key]
    facts = measure()
    facts["measured_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cached[key] = facts
    with contextlib.suppress(OSError):  # a read-only cache: measure again next time
        atomic_write_json(path, cached)
    return facts


def preferred_dtype() -> torch.dtype:
    """The CPU float dtype the measurement picks (``AJ_CPU_DTYPE`` overrides: float32 / bfloat16)."""
    env = os.environ.get("AJ_CPU_DTYPE")
    if env:
        return getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}.get(env, env))
    return getattr(torch, machine_facts()["preferred"])
