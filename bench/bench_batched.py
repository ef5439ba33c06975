"""Batched passes benchmark: target-only tokens/s of the batch-1 engine vs the BatchedEngine.

One process, one run, one random-weight target model (shape of a real one; the
weights do not matter for speed), greedy target-only decoding (mode ``ar``) of
random-token prompts of different lengths, with EOS disabled so every row
generates exactly ``--max-new-tokens`` tokens. For each dtype: the batch-1
:class:`~autojudge.core.engine.SpeculativeEngine` over the prompts one after
another, then :class:`~autojudge.core.batched.BatchedEngine` at each batch
size. Times include prefill. ``same`` counts rows whose tokens equal the
batch-1 engine's (expect all in fp32; bf16 near-ties may differ).

    python bench/bench_batched.py                               # Qwen2.5-Coder-1.5B shape, fp32 + bf16, B = 1,4,8,16
    python bench/bench_batched.py --batches 1,8 --max-new-tokens 16
    python bench/bench_batched.py --tiny                        # seconds: CI smoke run
    python bench/bench_batched.py --target-layers 4 --hidden 512

Record the CPU (printed at the top) with every figure: the M=1 vs M=16 GEMM gap
depends on the CPU's vector units (avx2 / avx512 / amx).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import time
from pathlib import Path

import torch

PRESETS = {
    # Qwen2.5-Coder-1.5B-Instruct's shape
    "qwen2.5-coder-1.5b": dict(hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2, vocab=151936),
    "qwen2.5-coder-0.5b": dict(hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2, vocab=151936),
    "tiny": dict(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=512),
}


def cpu_info() -> tuple[str, list[str]]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (no lscpu)", []
    model, flags = "unknown", []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            model = value.strip()
        elif key.strip() == "Flags":
            flags = [f for f in value.split() if f == "avx2" or f.startswith(("avx512", "amx", "avx_vnni"))]
    return model, flags


def build_target(shape: dict, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """A Qwen2 causal LM of ``shape`` with random weights, built without the (slow) default init."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        eos_token_id=shape["vocab"] - 1,
        pad_token_id=shape["vocab"] - 2,
        bos_token_id=None,
    )
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    # the rotary inv_freq buffers were left uninitialised by to_empty: rebuild those modules
    for name, mod in list(model.named_modules()):
        if type(mod).__name__.endswith("RotaryEmbedding"):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, type(mod)(cfg))
    return model.to(dtype).eval()


def make_prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """``n`` random-token prompts of different lengths around ``length`` (0.5x to 1.5x)."""
    rng = random.Random(seed)
    lo, hi = max(1, length // 2), max(1, (3 * length) // 2)
    return [[rng.randrange(0, vocab - 2) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


HEADER = (
    "| engine | batch | rows | tokens | wall s | tok/s | decode tok/s | x batch-1 engine (decode) "
    "| same tokens as batch-1 |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def print_row(r: dict) -> None:
    same = f"{r['same']}/{r['rows']}" if "same" in r else "-"
    print(
        f"| {r['engine']} | {r['batch']} | {r['rows']} | {r['tokens']} | {r['wall_s']:.2f} | "
        f"{r['tok_s']:.2f} | {r['decode_tok_s']:.2f} | {r['speedup']:.2f} | {same} |",
        flush=True,
    )


def best_of(repeats: int, fn):
    """Run ``fn`` ``repeats`` times; the result and wall time of the fastest run (first runs pay kernel set-up)."""
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        if best is None or wall < best[1]:
            best = (out, wall)
    return best


def bench_dtype(model, prompts, batches, max_new_tokens, repeats: int = 2) -> list[dict]:
    """Batch-1 engine over the prompts, then the batched engine at each batch size; prints rows as they finish.

    ``decode tok/s`` leaves out prefill: (tokens - rows) / (wall - prefill time).
    """
    from autojudge.core.batched import BatchedEngine
    from autojudge.core.engine import SpeculativeEngine

    kw = dict(mode="ar", max_new_tokens=max_new_tokens, eos_token_ids=())
    single = SpeculativeEngine(model)
    n = max(batches)
    res, wall = best_of(repeats, lambda: [single.generate(p, reuse_cache=False, **kw) for p in prompts[:n]])
    ref = [r.tokens for r in res]
    n_tok = sum(len(t) for t in ref)
    prefill = sum(r.metrics.prefill_time for r in res)
    base = (n_tok - n) / (wall - prefill)
    row = dict(
        engine="batch-1 SpeculativeEngine", batch=1, rows=n, tokens=n_tok, wall_s=wall, tok_s=n_tok / wall
    )
    row.update(decode_tok_s=base, speedup=1.0)
    rows = [row]
    print_row(row)
    batched = BatchedEngine(model)
    for b in batches:
        res, wall = best_of(repeats, lambda b=b: batched.generate_batch(prompts[:b], **kw))
        n_tok = sum(len(r.tokens) for r in res)
        prefill = max(r.metrics.prefill_time for r in res)  # one admission pass for all rows
        decode = (n_tok - b) / (wall - prefill)
        same = sum(r.tokens == t for r, t in zip(res, ref, strict=False))
        row = dict(engine="BatchedEngine", batch=b, rows=b, tokens=n_tok, wall_s=wall, tok_s=n_tok / wall)
        row.update(decode_tok_s=decode, speedup=decode / base, same=same)
        rows.append(row)
        print_row(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="qwen2.5-coder-1.5b")
    ap.add_argument("--tiny", action="store_true", help="tiny model, few tokens: a smoke run in seconds")
    ap.add_argument("--target-layers", type=int, help="override the preset's layer count")
    ap.add_argument("--hidden", type=int, help="override the preset's hidden size (intermediate = 5.83x)")
    ap.add_argument("--batches", default="1,4,8,16", help="comma-separated batch sizes")
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=64, help="mean prompt length (0.5x-1.5x)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per measurement; the fastest counts")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, help="write the results as JSON")
    args = ap.parse_args(argv)

    shape = dict(PRESETS["tiny" if args.tiny else args.preset])
    if args.tiny:
        args.max_new_tokens = min(args.max_new_tokens, 8)
        args.prompt_len = min(args.prompt_len, 12)
    if args.target_layers:
        shape["layers"] = args.target_layers
    if args.hidden:
        shape["hidden"] = args.hidden
        shape["intermediate"] = int(args.hidden * 35 / 6) // 64 * 64 or 64
        shape["heads"] = max(1, args.hidden // 128)
        shape["kv_heads"] = 1 if shape["heads"] % 2 else 2
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = sorted({int(b) for b in args.batches.split(",") if b.strip()})
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    model_name, flags = cpu_info()
    print(f"CPU: {model_name}")
    print(f"flags: {' '.join(flags) or '(no avx2/avx512/amx)'}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    print(
        f"model: random Qwen2 {shape['layers']} layers, hidden {shape['hidden']}, intermediate {shape['intermediate']}, "
        f"heads {shape['heads']}/{shape['kv_heads']}, vocab {shape['vocab']}; mode ar, "
        f"{args.max_new_tokens} new tokens per row, prompts ~{args.prompt_len} tokens"
    )
    prompts = make_prompts(max(batches), args.prompt_len, shape["vocab"])
    print(f"prompt lengths: {[len(p) for p in prompts]}\n")

    results = []
    model = None
    for name in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
        t0 = time.perf_counter()
        model = build_target(shape, torch.float32) if model is None else model
        model = model.to(dtypes[name])
        build_s = time.perf_counter() - t0
        print(f"### {name} (model ready in {build_s:.1f} s)\n")
        print(HEADER, flush=True)
        rows = bench_dtype(model, prompts, batches, args.max_new_tokens, args.repeats)
        print()
        results.append({"dtype": name, "rows": rows})
    if args.out:
        args.out.write_text(
            json.dumps({"cpu": model_name, "flags": flags, "shape": shape, "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
