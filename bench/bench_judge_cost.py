"""Cost of one fused judge call at real model sizes, to compare with a verification cycle.

The engine calls the judge once per cycle, on the window positions after the first
mismatch (twice for ``dd`` judges when the decision reaches the last position, whose
draft hidden state then costs a draft step: that step is not timed here). This times
``LinearJudge.accept`` on ``n`` positions with the Qwen2.5-Coder pair's sizes (target
hidden 1536, draft hidden 896, vocabulary 151,936) for each feature set; divide by the
cycle time measured by ``bench/bench_engine.py`` (wall time / cycles) for the judge's share.

    python bench/bench_judge_cost.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autojudge.core.judge import LinearJudge, MismatchFeatures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-hidden", type=int, default=1536)
    ap.add_argument("--draft-hidden", type=int, default=896)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("-n", type=int, default=3, help="window positions judged in one call")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dt = getattr(torch, args.dtype)
    sizes = {"dt": args.target_hidden, "dd": args.draft_hidden, "x": 3}
    print(f"n={args.n} positions, {args.dtype} features, {torch.get_num_threads()} thread(s)")
    for blocks in (("dt",), ("dt", "x"), ("dd", "dt", "x")):
        judge = LinearJudge(
            {b: torch.randn(sizes[b]) for b in blocks}, bias=0.0, threshold=0.5, blocks=blocks
        )
        times = []
        for _ in range(args.reps):
            feats = MismatchFeatures(
                draft_tokens=torch.randint(0, args.vocab, (args.n,)),
                target_tokens=torch.randint(0, args.vocab, (args.n,)),
                target_logits=torch.randn(args.n, args.vocab).to(dt),
                target_hidden=torch.randn(args.n, args.target_hidden).to(dt),
                draft_hidden=torch.randn(args.n, args.draft_hidden).to(dt),
            )
            t0 = time.perf_counter()
            judge.accept(feats)
            times.append(time.perf_counter() - t0)
        print(
            f"{'+'.join(blocks):>8}: {1000 * statistics.median(times):.2f} ms per judge call (median of {args.reps})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
