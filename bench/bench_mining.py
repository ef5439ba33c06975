"""Mining benchmark: our Algorithm 1 vs a naive implementation of the same algorithm, same prompts.

Naive = the reference way: every rollout regenerated token by token from scratch
(no KV reuse) and the draft argmax recomputed from scratch. Ours = prefix KV
reuse + lossless lookup-drafter rollouts. Reports, per label: sequential target
forward passes and target tokens computed; wall time per prompt; and checks that
both give identical labels, answers and positions (run in float32 for that).

    python bench/bench_mining.py --limit 2 --max-mismatches 3          # Qwen pair, GSM8K train
    python bench/bench_mining.py --draft smollm2-135m-instruct --target smollm2-135m-instruct --smoke

Goal (issue 5): >= 5x fewer sequential target forward passes per label than naive.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--draft", default=None)
    ap.add_argument("--target", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--limit", type=int, default=2)
    ap.add_argument("--offset", type=int, default=0, help="skip this many prompts of the split first")
    ap.add_argument("--max-mismatches", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--smoke", action="store_true", help="CI smoke: 1 prompt, 1 mismatch, 32 tokens")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from autojudge.core import presets
    from autojudge.core.mining.steps import Miner, MiningConfig
    from autojudge.core.models import load_pair
    from autojudge.plugins.manager import get_task

    if args.smoke:
        args.limit, args.max_mismatches, args.max_new_tokens = 1, 1, 32
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    pair = load_pair(
        args.draft or presets.DEFAULT_DRAFT, args.target or presets.DEFAULT_TARGET, dtype=args.dtype
    )
    examples = task.load(task.mining_split, limit=args.offset + args.limit)[args.offset :]
    results: dict[str, list] = {}
    times: dict[str, float] = {}
    for name, naive in (("ours", False), ("naive", True)):
        cfg = MiningConfig(
            max_new_tokens=args.max_new_tokens, max_mismatches=args.max_mismatches, naive=naive
        )
        miner = Miner(task, pair.target.model, pair.draft.model, pair.tokenizer, cfg)
        t0 = time.perf_counter()
        results[name] = [miner.mine(ex, i) for i, ex in enumerate(examples)]
        times[name] = time.perf_counter() - t0
        print(f"  {name}: {times[name]:.1f}s", file=sys.stderr)

    def key(res):
        return [(r.position, r.draft_token, r.label, str(r.answer_alternative)) for r in res.records]

    identical = all(key(a) == key(b) for a, b in zip(results["ours"], results["naive"], strict=True))
    rows = {}
    for name, res in results.items():
        labels = sum(len(r.records) for r in res)
        roll_fwd = sum(rec.rollout_target_forwards for r in res for rec in r.records)
        roll_tok = sum(rec.rollout_target_tokens for r in res for rec in r.records)
        rows[name] = {
            "prompts": len(res),
            "labels": labels,
            "important": sum(rec.label for r in res for rec in r.records),
            "rollout_target_forwards_per_label": roll_fwd / labels if labels else 0.0,
            "rollout_target_tokens_per_label": roll_tok / labels if labels else 0.0,
            "all_target_forwards_per_label": sum(r.target_forwards for r in res) / labels if labels else 0.0,
            "seconds_per_prompt": times[name] / len(res),
        }
    o, n = rows["ours"], rows["naive"]
    print(
        f"\ntask={args.task} draft={pair.draft.id} target={pair.target.id} dtype={args.dtype} "
        f"threads={torch.get_num_threads()} prompts={len(examples)} max_mismatches={args.max_mismatches} "
        f"max_new_tokens={args.max_new_tokens}\n"
    )
    print(
        "| implementation | labels | important | target passes / label (rollouts) | target passes / label (all) | target tokens / label | s / prompt |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['labels']} | {r['important']} | {r['rollout_target_forwards_per_label']:.1f} | "
            f"{r['all_target_forwards_per_label']:.1f} | {r['rollout_target_tokens_per_label']:.1f} | {r['seconds_per_prompt']:.1f} |"
        )
    ratio = n["rollout_target_forwards_per_label"] / max(o["rollout_target_forwards_per_label"], 1e-9)
    ratio_all = n["all_target_forwards_per_label"] / max(o["all_target_forwards_per_label"], 1e-9)
    print(
        f"\nsequential target passes per label: {ratio:.2f}x fewer in rollouts, {ratio_all:.2f}x fewer overall; "
        f"wall time {n['seconds_per_prompt'] / o['seconds_per_prompt']:.2f}x faster; identical labels: {identical}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {"rows": rows, "identical_labels": identical, "args": vars(args)}, indent=2, default=str
            )
        )
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
