"""Mining drivers on the same prompts: sequential transformers, pipelined transformers, vLLM.

* ``sequential``: :meth:`Miner.mine`, one prompt after the other (checks inline);
* ``pipelined``: :class:`PipelinedMiner`, ``--inflight`` prompts at once, checks in a
  background thread while the models advance other prompts;
* ``vllm``: :class:`VLLMMiner`, the rollouts of all in-flight prompts as one batched,
  prefix-cached vLLM ``generate`` per round (draft argmax and features on transformers).

Reports wall time per prompt and per label, the time inside rollouts (summed over prompts: a
batched vLLM call counts once for every prompt in it), and whether labels,
positions, draft tokens and answers are identical to the sequential driver's (float32).
vLLM start-up is timed separately (not in the per-prompt figures).

    AJ_DATA_DIR=/work/shared/datasets python bench/bench_mining_vllm.py --limit 3 --max-new-tokens 128
    python bench/bench_mining_vllm.py --task toy-arith --limit 3 --max-new-tokens 40 --drivers sequential,vllm

The draft defaults to the target's first ``--draft-layers`` layers (a layer-dropped copy, as in
the vLLM tests). Exit status 1 when any driver's labels differ from the sequential ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch


def _note(driver: str, r):
    print(
        f"    {driver}: prompt {r.index} done, {len(r.records)} labels, {r.seconds:.1f}s",
        file=sys.stderr,
        flush=True,
    )
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--target", default="smollm2-135m-instruct")
    ap.add_argument(
        "--draft", default=None, help="draft model spec [default: the target's first --draft-layers layers]"
    )
    ap.add_argument("--draft-layers", type=int, default=24)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--limit", type=int, default=3)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--max-mismatches", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--inflight", type=int, default=3)
    ap.add_argument("--drivers", default="sequential,pipelined,vllm")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from autojudge.core.mining.pipelined import PipelinedMiner
    from autojudge.core.mining.steps import Miner, MiningConfig
    from autojudge.core.models import layer_dropped_copy, load_model
    from autojudge.plugins.manager import get_task

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    task = get_task(args.task)
    target = load_model(args.target, dtype=args.dtype)
    if args.draft:
        draft_model = load_model(args.draft, dtype=args.dtype).model
    else:
        draft_model = layer_dropped_copy(target.model, list(range(args.draft_layers)))
    tok = target.tokenizer
    examples = task.load(task.mining_split, limit=args.offset + args.limit)[args.offset :]
    items = list(enumerate(examples))
    cfg = MiningConfig(
        max_new_tokens=args.max_new_tokens, max_mismatches=args.max_mismatches, inflight=args.inflight
    )
    drivers = [d.strip() for d in args.drivers.split(",") if d.strip()]

    results: dict[str, dict[int, object]] = {}
    rows: dict[str, dict] = {}
    for name in drivers:
        rollout_s = [0.0]
        t_roll: dict[int, float] = {}

        def on_event(kind: str, index: int, t_roll=t_roll, rollout_s=rollout_s) -> None:
            now = time.perf_counter()
            if kind == "rollout_start":
                t_roll[index] = now
            elif kind == "rollout_end":
                rollout_s[0] += now - t_roll.pop(index)

        startup = 0.0
        closer = None
        with torch.inference_mode():
            if name == "sequential":
                miner = Miner(task, target.model, draft_model, tok, cfg)
                plain_rollout = miner.rollout

                def timed_rollout(req, plain_rollout=plain_rollout, rollout_s=rollout_s):
                    t0 = time.perf_counter()
                    try:
                        return plain_rollout(req)
                    finally:
                        rollout_s[0] += time.perf_counter() - t0

                miner.rollout = timed_rollout  # type: ignore[method-assign]

                def run(miner=miner, driver=name):
                    return {i: _note(driver, miner.mine(ex, i)) for i, ex in items}
            elif name == "pipelined":
                pm = PipelinedMiner(task, target.model, draft_model, tok, cfg, on_event=on_event)

                def run(pm=pm, driver=name):
                    return {r.index: _note(driver, r) for r in pm.mine_many(items)}
            elif name == "vllm":
                from autojudge.core.mining.vllm import VLLMMiner

                t0 = time.perf_counter()
                vm = VLLMMiner(task, target.model, draft_model, tok, cfg, target_path=target.path or args.target,
                               dtype=args.dtype, on_event=on_event)  # fmt: skip
                startup = time.perf_counter() - t0
                closer = vm.close

                def run(vm=vm, driver=name):
                    return {r.index: _note(driver, r) for r in vm.mine_many(items)}
            else:
                raise SystemExit(f"unknown driver {name!r}")
            t0 = time.perf_counter()
            res = run()
            wall = time.perf_counter() - t0
        if closer is not None:
            calls = vm.rollouts.generate_calls  # noqa: F821 - set in the vllm branch
            closer()
        else:
            calls = None
        results[name] = res
        labels = sum(len(r.records) for r in res.values())
        rows[name] = {
            "prompts": len(res),
            "labels": labels,
            "important": sum(x.label for r in res.values() for x in r.records),
            "skipped": sum(bool(r.skipped) for r in res.values()),
            "wall_s": wall,
            "s_per_prompt": wall / len(res),
            "s_per_label": wall / labels if labels else float("nan"),
            "rollout_s": rollout_s[0],
            "startup_s": startup,
            "vllm_generate_calls": calls,
        }
        print(f"  {name}: {wall:.1f}s ({labels} labels)", file=sys.stderr)

    def key(r):
        return (
            r.response,
            r.skipped,
            [(x.position, x.draft_token, x.label, str(x.answer_alternative)) for x in r.records],
        )

    base = drivers[0]
    identical = {
        name: all(key(results[name][i]) == key(results[base][i]) for i, _ in items) for name in drivers[1:]
    }
    print(f"\ntask={args.task} target={args.target} draft={'layers 0-' + str(args.draft_layers - 1) if not args.draft else args.draft} "
          f"dtype={args.dtype} threads={torch.get_num_threads()} prompts={len(items)} inflight={args.inflight} "
          f"max_new_tokens={args.max_new_tokens} max_mismatches={args.max_mismatches}\n")  # fmt: skip
    print(
        "| driver | labels | important | s / prompt | s / label | speed-up | rollout s (summed per prompt) | identical labels |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, r in rows.items():
        speed = rows[base]["wall_s"] / r["wall_s"]
        roll = f"{r['rollout_s']:.1f}"
        same = "(reference)" if name == base else str(identical[name])
        print(f"| {name} | {r['labels']} | {r['important']} | {r['s_per_prompt']:.1f} | {r['s_per_label']:.2f} | "
              f"{speed:.2f}x | {roll} | {same} |")  # fmt: skip
    if "vllm" in rows:
        print(
            f"\nvLLM start-up (not included above): {rows['vllm']['startup_s']:.1f}s; "
            f"batched generate calls: {rows['vllm']['vllm_generate_calls']}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"rows": rows, "identical": identical, "args": vars(args)}, indent=2, default=str)
        )
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
