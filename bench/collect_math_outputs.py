"""Collect real target outputs on math problems for the regression tests (issue 4).

Runs the target greedily (lossless speculative decoding with the draft, which is the
target's greedy output) on the first problems of GSM8K test and MATH-500 eval, and
writes candidate rows in the format of ``tests/data/math_model_outputs.jsonl`` with
``expected_answer`` / ``expected_correct`` filled in by the current extractor and
checker. Review every row by reading its response before appending it to the test
file: a regression row is only as good as that review.

    AJ_DATA_DIR=../shared/datasets python bench/collect_math_outputs.py --gsm8k 16 --math500 8 --out /tmp/rows.jsonl

Outputs the models already produced elsewhere can be harvested instead of generated again:
``--from-mined DIR`` takes the target's greedy responses from an ``aj mine`` directory (its
``prompts/*.json``; references come from the task's data set), ``--from-run DIR`` the
target-only rows (``eval/ar.jsonl``) of an ``aj run`` directory. ``--task`` names the math task.

    python bench/collect_math_outputs.py --from-mined runs/mine-gsm8k --task gsm8k --out /tmp/rows.jsonl
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
    ap.add_argument("--offset", type=int, default=0, help="skip this many problems of each eval split first")
    ap.add_argument("--max-new-tokens", type=int, default=384)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--from-mined", type=Path, default=None, help="harvest responses from an `aj mine` directory"
    )
    ap.add_argument(
        "--from-run", type=Path, default=None, help="harvest target-only rows from an `aj run` directory"
    )
    ap.add_argument("--task", default=None, help="math task of --from-mined / --from-run (e.g. gsm8k)")
    args = ap.parse_args(argv)
    if args.from_mined or args.from_run:
        return harvest(args)

    from autojudge.core import presets
    from autojudge.core.engine import SpeculativeEngine
    from autojudge.core.models import load_pair
    from autojudge.plugins.manager import get_task

    torch.set_num_threads(args.threads)
    pair = load_pair(
        args.draft or presets.DEFAULT_DRAFT, args.target or presets.DEFAULT_TARGET, dtype=args.dtype
    )
    eng = SpeculativeEngine(pair.target.model, pair.draft.model, pair.tokenizer)
    source = f"{pair.target.id} ({args.dtype}, greedy)"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for task_name, n in (("gsm8k", args.gsm8k), ("math500", args.math500)):
            task = get_task(task_name)
            for ex in task.load(task.eval_split, limit=args.offset + n)[args.offset :]:
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
                print(
                    f"{ex.id}: answer={answer!r} reference={ex.reference!r} correct={row['expected_correct']} "
                    f"({res.metrics.num_output_tokens} tokens, {res.metrics.tokens_per_s:.1f} tok/s)",
                    file=sys.stderr,
                )
    return 0


def harvest(args: argparse.Namespace) -> int:
    """Candidate rows from outputs already on disk (no model is loaded)."""
    from autojudge.core.data import read_jsonl
    from autojudge.plugins.manager import get_task

    if not args.task:
        raise SystemExit("--task is required with --from-mined / --from-run")
    task = get_task(args.task)
    found: list[tuple[str, str, object, str]] = []  # (id, response, reference, source)
    if args.from_mined:
        meta = json.loads((args.from_mined / "meta.json").read_text())
        split = meta.get("split") or task.mining_split
        refs = {ex.id: ex.reference for ex in task.load(split)}
        source = f"{meta.get('target', {}).get('id', 'target')} ({meta.get('settings', {}).get('dtype', '?')}, greedy)"
        for p in sorted((args.from_mined / "prompts").glob("[0-9]*.json")):
            row = json.loads(p.read_text())
            if row.get("response") and row["prompt_id"] in refs:
                found.append((row["prompt_id"], row["response"], refs[row["prompt_id"]], source))
    if args.from_run:
        state = (
            json.loads((args.from_run / "state.json").read_text())
            if (args.from_run / "state.json").is_file()
            else {}
        )
        source = f"aj run {args.from_run.name} target-only ({state.get('dtype', 'greedy')})"
        for row in read_jsonl(args.from_run / "eval" / "ar.jsonl"):
            found.append((row["prompt_id"], row["output"], row["reference"], source))
    from autojudge.core.task import Example

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for ex_id, response, reference, source in found:
            answer = task.extract_answer(response)
            ex = Example(id=ex_id, question="", reference=reference)
            row = {
                "id": ex_id,
                "task": args.task,
                "response": response,
                "reference": reference,
                "expected_answer": answer,
                "expected_correct": bool(answer is not None and task.is_correct(answer, ex)),
                "source": source,
            }
            f.write(json.dumps(row) + "\n")
            print(
                f"{ex_id}: answer={answer!r} reference={reference!r} correct={row['expected_correct']}",
                file=sys.stderr,
            )
    print(f"{len(found)} candidate rows -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
