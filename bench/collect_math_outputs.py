"""Collect real target outputs on math problems for the regression tests (issue 4).

Runs the target greedily (lossless speculative decoding with the draft, which is the
target's greedy output) on the first problems of GSM8K test and MATH-500 eval, and
writes candidate rows in the format of ``tests/data/math_model_outputs.jsonl`` with
``expected_answer`` / ``expected_correct`` filled in by the current extractor and
checker. Review every row by reading its response before appending it to the test
file: a regression row is only as good as that review.

    AJ_DATA_DIR=../shared/datasets python bench/collect_math_outputs.py --gsm8k 16 --math500 8 --out /tmp/rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draft", default=None)
    ap.add_argument("--target", default=None)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--gsm8k", type=int, default=16)
    ap.add_argument("--math500", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=384)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from autojudge.core import presets
    from autojudge.core.engine import SpeculativeEngine
    from autojudge.core.models import load_pair
    from autojudge.plugins.manager import get_task

    torch.set_num_threads(args.threads)
    pair = load_pair(args.draft or presets.DEFAULT_DRAFT, args.target or presets.DEFAULT_TARGET, dtype=args.dtype)
    eng = SpeculativeEngine(pair.target.model, pair.draft.model, pair.tokenizer)
    source = f"{pair.target.id} ({args.dtype}, greedy)"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for task_name, n in (("gsm8k", args.gsm8k), ("math500", args.math500)):
            task = get_task(task_name)
            for ex in task.load(task.eval_split, limit=n):
                res = eng.generate(
                    task.render_prompt(ex, pair.tokenizer), mode="sd", k=5,
                    max_new_tokens=args.max_new_tokens, stop_sequences=task.stop_sequences,
                )  # fmt: skip
                answer = task.extract_answer(res.text)
                row = {
                    "id": ex.id,
                    "task": task_name,
                    "response": res.text,
                    "reference": ex.reference,
                    "expected_answer": answer,
                    "expected_correct": bool(answer is not None and task.is_correct(answer, ex)),
                    "source": source,
                }
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(f"{ex.id}: answer={answer!r} reference={ex.reference!r} correct={row['expected_correct']} "
                      f"({res.metrics.num_output_tokens} tokens, {res.metrics.tokens_per_s:.1f} tok/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
