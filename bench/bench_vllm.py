"""vLLM backend benchmark: vLLM lossless SD vs vLLM with the judge vs autojudge's own engine.

Same models, same prompts, one process, one run; single stream (batch 1) and batched
(default batch 8: one vLLM call with 8 prompts; our engine, which decodes one prompt at a
time, runs the same 8 prompts in a row). Greedy, tokens/s = output tokens / wall time of
the whole batch. Prints a Markdown table; ``--out`` writes JSON.

    python bench/bench_vllm.py                             # SmolLM2-135M, 8-layer draft, k=4, bf16
    python bench/bench_vllm.py --judge runs/x/judge.safetensors --target T --draft D
    python bench/bench_vllm.py --smoke                     # seconds, for CI

The default pair is SmolLM2-135M-Instruct with a layer-dropped copy of itself as draft
(its first ``--draft-layers`` layers, saved to a temporary directory), because it is the
only pair small enough to run here several times; the default judge is the ``prob:0.2``
baseline (needs the target's softmax, like a ``dt+x`` judge). Needs the vllm extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Reason step by step.",
    "Write a Python function `is_prime(n)` that returns True when n is a prime number, with a docstring.",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Explain in three short paragraphs what speculative decoding is and why it speeds up LLM inference.",
    "List five countries in Europe and their capitals.",
    "What is the derivative of x^3 + 2x? Explain briefly.",
    "Write a haiku about the sea.",
    "Tom has 3 apples and buys 5 more. How many apples does he have? Think step by step.",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="smollm2-135m-instruct")
    p.add_argument(
        "--draft", default=None, help="Draft model; default: the target's first --draft-layers layers"
    )
    p.add_argument("--draft-layers", type=int, default=8)
    p.add_argument(
        "--judge", default="prob:0.2", help="Judge artifact or baseline (never, always, topk:K, prob:P)"
    )
    p.add_argument("-k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch", default="1,8", help="Comma-separated batch sizes")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--with-ar", action="store_true", help="Also time vLLM target-only decoding")
    p.add_argument("--smoke", action="store_true", help="Tiny run (k=2, 8 tokens, batches 1,2)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    if a.smoke:
        a.k, a.max_new_tokens, a.batch, a.draft_layers = 2, 8, "1,2", 4
    a.batches = [int(b) for b in a.batch.split(",") if b.strip()]
    return a


def make_draft(target: str, layers: int, out: Path) -> Path:
    from autojudge.core.models import layer_dropped_copy, load_model

    t = load_model(target, dtype="bfloat16")
    layer_dropped_copy(t.model, list(range(layers))).save_pretrained(out)
    t.tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    torch.set_num_threads(a.threads)
    from autojudge.core.backends.vllm import VLLM_VERSION
    from autojudge.core.backends.vllm.engine import VLLMEngine
    from autojudge.core.engine import SpeculativeEngine
    from autojudge.core.models import load_model
    from autojudge.judges.spec import load_judge_spec

    tmp = tempfile.TemporaryDirectory(prefix="bench-vllm-")
    draft = a.draft or str(make_draft(a.target, a.draft_layers, Path(tmp.name) / "draft"))
    target = load_model(a.target, dtype=a.dtype)
    dmodel = load_model(draft, dtype=a.dtype)
    tok = target.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in PROMPTS]  # fmt: skip
    venv = VLLMEngine(a.target, draft, k=a.k, dtype=a.dtype, max_num_seqs=max(a.batches), kv_cache_gib=1.0,
                      max_model_len=2048)  # fmt: skip
    judge_obj = load_judge_spec(a.judge, target=target, draft=dmodel) if a.judge else None
    judge_cfg = (
        venv.judge_description(judge_obj) if judge_obj is not None else None
    )  # what the workers rebuild
    ours = SpeculativeEngine(target.model, dmodel.model, tok)

    def vllm_run(mode: str, batch: list[str]) -> dict:
        res = venv.generate(
            batch, mode=mode, judge=judge_cfg if mode == "judge" else None, max_new_tokens=a.max_new_tokens
        )
        m = res[0].metrics
        return {"tokens": m.num_output_tokens, "wall": m.wall_time, "mal": m.mean_acceptance_length,
                "judge_accepted": m.num_judge_accepted, "outputs": [r.tokens for r in res]}  # fmt: skip

    def ours_run(mode: str, batch: list[str]) -> dict:
        toks, wall, emitted, cycles, judged, outs = 0, 0.0, 0, 0, 0, []
        for p in batch:
            r = ours.generate(p, mode=mode, judge=judge_obj if mode == "judge" else None, k=a.k,
                              max_new_tokens=a.max_new_tokens, reuse_cache=False)  # fmt: skip
            m = r.metrics
            toks, wall = toks + m.num_output_tokens, wall + m.wall_time
            emitted, cycles, judged = (
                emitted + sum(m.emitted_per_cycle),
                cycles + m.num_drafts,
                judged + m.num_judge_accepted,
            )
            outs.append(r.tokens)
        return {"tokens": toks, "wall": wall, "mal": emitted / cycles if cycles else 1.0, "judge_accepted": judged,
                "outputs": outs}  # fmt: skip

    # warm-up, not timed: engine start-up, then every (mode, batch size) once - vLLM's first verification
    # steps of a new shape are very slow on CPU (measured: 91 s for the first 8 tokens at batch 1)
    t0 = time.perf_counter()
    venv.generate(prompts[:1], mode="sd", max_new_tokens=4)
    startup = time.perf_counter() - t0
    for bsz in a.batches:
        warm = [prompts[i % len(prompts)] for i in range(bsz)]
        for mode in ("ar", "sd", "judge") if a.with_ar else ("sd", "judge"):
            venv.generate(warm, mode=mode, judge=judge_cfg if mode == "judge" else None, max_new_tokens=16)
    warmup = time.perf_counter() - t0
    ours.generate(prompts[0], mode="sd", k=a.k, max_new_tokens=4)

    rows = []
    configs = [("vLLM lossless SD", "vllm", "sd"), ("vLLM + judge", "vllm", "judge"),
               ("autojudge engine lossless SD", "ours", "sd"), ("autojudge engine + judge", "ours", "judge")]  # fmt: skip
    if a.with_ar:
        configs.insert(0, ("vLLM target-only", "vllm", "ar"))
    for bsz in a.batches:
        batch = [prompts[i % len(prompts)] for i in range(bsz)]
        for name, backend, mode in configs:
            r = (vllm_run if backend == "vllm" else ours_run)(mode, batch)
            r.update(
                name=name,
                backend=backend,
                mode=mode,
                batch=bsz,
                tok_s=r["tokens"] / r["wall"] if r["wall"] else 0.0,
            )
            rows.append(r)
            print(f"[bench_vllm] batch {bsz} {name}: {r['tok_s']:.2f} tok/s", file=sys.stderr, flush=True)

    def same(backend_a: str, backend_b: str, mode: str, bsz: int) -> bool:
        pick = {(r["backend"], r["mode"], r["batch"]): r["outputs"] for r in rows}
        return pick[(backend_a, mode, bsz)] == pick[(backend_b, mode, bsz)]

    print(f"vLLM {VLLM_VERSION}, target {a.target}, draft {a.draft or f'{a.draft_layers}-layer copy'}, judge {a.judge}, "
          f"k={a.k}, {a.max_new_tokens} new tokens, {a.dtype}, {a.threads} threads, {platform.processor() or platform.machine()}")  # fmt: skip
    print(
        f"vLLM start-up (spec engine, first call): {startup:.1f}s; with the warm-up of every mode and batch: {warmup:.1f}s\n"
    )
    print("| batch | mode | tok/s | tokens per verification | judge accepts | wall s |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['name']} | {r['tok_s']:.2f} | {r['mal']:.2f} | {r['judge_accepted']} | {r['wall']:.2f} |"
        )
    for bsz in a.batches:
        print(
            f"batch {bsz}: identical outputs vLLM vs engine: lossless {same('vllm', 'ours', 'sd', bsz)}, "
            f"judged {same('vllm', 'ours', 'judge', bsz)}"
        )
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"settings": {k: v for k, v in vars(a).items() if k != "out"}, "startup_s": startup, "warmup_s": warmup,
                                     "rows": [{k: v for k, v in r.items() if k != "outputs"} for r in rows]},
                                    indent=2, default=str))  # fmt: skip
    venv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
