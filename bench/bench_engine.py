"""Engine benchmark: target-only vs lossless SD vs judged SD vs Hugging Face assisted generation.

Same pair, same prompts, same process, one run. Prints a Markdown table and
writes JSON (``--out``). Also measures the speed-model constants:
``c`` = draft step / target step (1-token forwards on a ~300-token cache) and
verify cost vs k (a (k+1)-token target forward relative to a 1-token one).

    python bench/bench_engine.py                       # Qwen2.5-Coder 0.5B -> 1.5B, bf16, CPU
    python bench/bench_engine.py --limit 2 --max-new-tokens 64   # smoke run
    python bench/bench_engine.py --draft smollm2-135m-instruct --target smollm2-135m-instruct --smoke

HF assisted generation runs with its default dynamic draft length and with a
constant ``k`` (``num_assistant_tokens_schedule="constant"``). Goals (issue 3):
our lossless SD >= HF assisted tokens/s (aim +20%); judge time < 2% of cycle time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Reason step by step and put the final answer in \\boxed{}.",
    "Write a Python function `is_prime(n)` that returns True when n is a prime number, with a docstring and two examples.",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn? "
    "Reason step by step and put the final answer in \\boxed{}.",
    "Explain in three short paragraphs what speculative decoding is and why it speeds up LLM inference.",
]


def step_times(runner_model, tokens: int, ks: list[int], reps: int = 3) -> dict[int, float]:
    """Median seconds of a forward over k+1 new tokens on a cache of ``tokens`` tokens (one prefill, forks)."""
    from autojudge.core.runner import ModelRunner

    r = ModelRunner(runner_model)
    r.reset()
    r.extend(torch.randint(100, 5000, (tokens,)))
    out = {}
    for k in ks:
        samples = []
        for _ in range(reps):
            f = r.fork()
            t0 = time.perf_counter()
            f.logits(f.extend(torch.randint(100, 5000, (k + 1,))))
            samples.append(time.perf_counter() - t0)
        out[k] = statistics.median(samples)
    return out


def measure_constants(pair, ks: tuple[int, ...] = (0, 1, 2, 4, 8, 16)) -> dict:
    """c = draft step / target step and the target's verify cost vs k, on a 300-token cache."""
    tt = step_times(pair.target.model, 300, list(ks))
    dt = step_times(pair.draft.model, 300, [0])
    return {
        "c_draft_over_target_step": dt[0] / tt[0],
        "target_step_s": tt[0],
        "draft_step_s": dt[0],
        "verify_cost_vs_k": {k: tt[k] / tt[0] for k in ks},
    }


def print_constants(consts: dict) -> None:
    print(
        f"c = draft step / target step = {consts['c_draft_over_target_step']:.3f} "
        f"(target {1000 * consts['target_step_s']:.0f} ms, draft {1000 * consts['draft_step_s']:.0f} ms, "
        f"{torch.get_num_threads()} threads)"
    )
    print(
        "verify cost vs k (target forward of k+1 tokens / 1 token): "
        + ", ".join(f"k={k}: {v:.2f}" for k, v in consts["verify_cost_vs_k"].items())
    )


def hf_generate(target, draft, ids, max_new_tokens, eos, k=None):
    kwargs = dict(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=list(eos), pad_token_id=list(eos)[0]
    )
    if draft is not None:
        kwargs["assistant_model"] = draft
        if k is not None:
            draft.generation_config.num_assistant_tokens = k
            draft.generation_config.num_assistant_tokens_schedule = "constant"
        else:
            draft.generation_config.num_assistant_tokens = 20
            draft.generation_config.num_assistant_tokens_schedule = "heuristic"
    inp = torch.tensor([ids])
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = target.generate(inp, attention_mask=torch.ones_like(inp), **kwargs)
    dt = time.perf_counter() - t0
    toks = out[0, len(ids) :].tolist()
    return toks, dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draft", default=None)
    ap.add_argument("--target", default=None)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--limit", type=int, default=len(PROMPTS))
    ap.add_argument(
        "--judge", default="prob:0.2", help="judge spec for the judged mode (see `aj decode --help`)"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-hf", action="store_true", help="skip Hugging Face assisted generation")
    ap.add_argument(
        "--smoke", action="store_true", help="tiny settings for CI: 1 prompt, 16 tokens, no step-time sweep"
    )
    ap.add_argument("--sweep-only", action="store_true", help="only measure c and the verify cost vs k")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from autojudge.core import presets
    from autojudge.core.engine import SpeculativeEngine
    from autojudge.core.models import load_pair
    from autojudge.judges.spec import load_judge_spec

    torch.set_num_threads(args.threads)
    if args.smoke:
        args.limit, args.max_new_tokens = 1, 16
    pair = load_pair(
        args.draft or presets.DEFAULT_DRAFT, args.target or presets.DEFAULT_TARGET, dtype=args.dtype
    )
    if args.sweep_only:
        print_constants(measure_constants(pair))
        return 0
    tok = pair.tokenizer
    eng = SpeculativeEngine(pair.target.model, pair.draft.model, tok)
    judge = load_judge_spec(args.judge, target=pair.target, draft=pair.draft)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in PROMPTS[: args.limit]
    ]
    ids = [eng.encode(p) for p in prompts]
    eos = eng._eos_default

    eng.generate(ids[0], mode="sd", k=args.k, max_new_tokens=4)  # warm-up

    rows: dict[str, dict] = {}
    outputs: dict[str, list[list[int]]] = {}

    def run_ours(name, **kw):
        from autojudge.core.metrics import GenerationMetrics

        mets, outs = [], []
        for p in ids:
            r = eng.generate(p, max_new_tokens=args.max_new_tokens, k=args.k, **kw)
            mets.append(r.metrics)
            outs.append(r.tokens)
        m = GenerationMetrics.merge(mets)
        cyc = m.draft_time + m.target_time + m.judge_time
        rows[name] = {
            "tokens": m.num_output_tokens,
            "seconds": m.wall_time,
            "tokens_per_s": m.tokens_per_s,
            "mean_acceptance_length": m.mean_acceptance_length,
            "judge_share_of_cycle": (m.judge_time / cyc) if cyc else 0.0,
            "metrics": m.as_dict(),
        }
        outputs[name] = outs
        print(f"  {name}: {m.tokens_per_s:.2f} tok/s, tau={m.mean_acceptance_length:.2f}", file=sys.stderr)

    def run_hf(name, draft, k=None):
        n, secs, outs = 0, 0.0, []
        for p in ids:
            toks, dt = hf_generate(pair.target.model, draft, p, args.max_new_tokens, eos, k)
            n += len(toks)
            secs += dt
            outs.append(toks)
        rows[name] = {"tokens": n, "seconds": secs, "tokens_per_s": n / secs, "mean_acceptance_length": None}
        outputs[name] = outs
        print(f"  {name}: {n / secs:.2f} tok/s", file=sys.stderr)

    print("running ...", file=sys.stderr)
    run_ours("autojudge target-only", mode="ar")
    run_ours(f"autojudge lossless SD (k={args.k})", mode="sd")
    run_ours(f"autojudge judged SD ({args.judge}, k={args.k})", mode="judge", judge=judge)
    # the trained judge's inference form, with weights that never accept: same trajectory as lossless SD,
    # so its time share is the pure cost of the fused dt+x judge
    from autojudge.core.judge import LinearJudge

    h = pair.target.hidden_size
    cost_judge = LinearJudge(
        {"dt": torch.zeros(h), "x": torch.zeros(3)}, bias=20.0, threshold=0.5, blocks=("dt", "x")
    )
    run_ours(
        f"autojudge judged SD (linear dt+x judge, cost only, k={args.k})", mode="judge", judge=cost_judge
    )
    if not args.no_hf:
        run_hf("HF target-only generate", None)
        run_hf("HF assisted (heuristic k)", pair.draft.model)
        run_hf(f"HF assisted (constant k={args.k})", pair.draft.model, k=args.k)

    base = rows["autojudge target-only"]["tokens_per_s"]
    sd_name = f"autojudge lossless SD (k={args.k})"
    ref_out = outputs["autojudge target-only"]
    for name, r in rows.items():
        r["speedup_vs_target_only"] = r["tokens_per_s"] / base
        same = sum(a == b for a, b in zip(outputs[name], ref_out, strict=True))
        r["outputs_equal_to_target_only"] = f"{same}/{len(ref_out)}"

    consts = {} if args.smoke else measure_constants(pair)

    print(
        f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"dtype {args.dtype}, {len(ids)} prompts x {args.max_new_tokens} max new tokens"
    )
    print(f"draft={pair.draft.id} target={pair.target.id}\n")
    print(
        "| mode | tokens | tok/s | speedup vs target-only | tokens per cycle | judge share of cycle | output == target-only |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        tau = f"{r['mean_acceptance_length']:.2f}" if r["mean_acceptance_length"] else "-"
        js = (
            f"{100 * r['judge_share_of_cycle']:.2f}%"
            if "judge_share_of_cycle" in r and "judged" in name
            else "-"
        )
        print(
            f"| {name} | {r['tokens']} | {r['tokens_per_s']:.2f} | {r['speedup_vs_target_only']:.2f}x | {tau} | {js} | {r['outputs_equal_to_target_only']} |"
        )
    hf_name = f"HF assisted (constant k={args.k})"
    if hf_name in rows:
        best_hf = max(rows[hf_name]["tokens_per_s"], rows["HF assisted (heuristic k)"]["tokens_per_s"])
        print(f"\nour lossless SD / best HF assisted: {rows[sd_name]['tokens_per_s'] / best_hf:.2f}x")
    if consts:
        print_constants(consts)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "constants": consts},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
