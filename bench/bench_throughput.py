"""Mining and evaluation throughput, every driver side by side in one run (issue 16's benchmark).

Each configuration runs in its own subprocess (so its peak RSS is its own) on the
same prompts of the same split, and prints one JSON line; the parent prints the table:

* mining: ``sequential`` (one prompt at a time, :meth:`Miner.mine`), ``pipelined``
  (prompts in flight, one rollout at a time), ``batched`` (the rollouts of all
  in-flight prompts in one batch per step), ``batched-int8`` (the same with
  ``--quant int8``) and ``vllm`` (rollouts on vLLM's CPU build): labels/hour,
  target tokens per label, whether its labels equal the sequential driver's on the
  prompts both mined, peak RSS, and the achieved GFLOP/s of the target's forward
  passes as a percentage of this machine's GEMM peak (M=64 rows, the target's MLP
  shape, same dtype, measured in the same run);
* evaluation: problems/hour of the batched engine (``BatchedEngine.generate_batch``,
  ``--eval-batch`` rows) in target-only (``ar``), lossless SD (``sd``) and judged SD
  (``judge``, with a Top-K judge as the stand-in unless ``--judge`` names an
  artifact), plus the batch-1 engine's problems/hour in ``sd`` as the latency figure.

The slow sequential driver mines only the first ``--seq-limit`` prompts; the
others mine ``--limit`` prompts; labels/hour compares rates, identity compares
the overlap. Run it on a quiet machine and record the ``lscpu`` flags it prints.

    python bench/bench_throughput.py                                   # Qwen pair, GSM8K train, bf16
    python bench/bench_throughput.py --configs batched,batched-int8 --limit 48
    python bench/bench_throughput.py --tiny                            # CI smoke run (tiny random pair, toy task)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_batched import cpu_info  # noqa: E402 - the same lscpu summary as the batched benchmark

MINING_CONFIGS = ("sequential", "pipelined", "batched", "batched-int8", "vllm")


def gemm_peak(hidden: int, intermediate: int, dtype: torch.dtype, rows: int = 64) -> float:
    """GFLOP/s of ``F.linear`` at ``rows`` x hidden -> intermediate in ``dtype`` (``autojudge.core.machine``)."""
    from autojudge.core.machine import gemm_gflops

    return gemm_gflops(dtype, rows, shape=(hidden, intermediate), seconds=0.5)


class PassMeter:
    """Times the target decoder's forwards and counts the tokens they process (FLOPs: 2 x linear params)."""

    def __init__(self, model: torch.nn.Module):
        decoder = model.get_decoder()
        self.linear_params = sum(
            m.weight.numel() for m in decoder.modules() if hasattr(m, "weight") and m.weight is not None
            and m.weight.dim() == 2 and not isinstance(m, torch.nn.Embedding)
        )  # fmt: skip
        if self.linear_params == 0:  # int8 linears keep their weight under another name
            self.linear_params = sum(
                int(getattr(m, "out_features", 0)) * int(getattr(m, "in_features", 0))
                for m in decoder.modules()
            )
        self.seconds, self.tokens, self.passes = 0.0, 0, 0
        self._t0 = 0.0
        decoder.register_forward_pre_hook(self._pre, with_kwargs=True)
        decoder.register_forward_hook(self._post, with_kwargs=True)

    def _pre(self, module, args, kwargs):
        self._t0 = time.perf_counter()
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._n = int(ids.numel()) if ids is not None else 0

    def _post(self, module, args, kwargs, out):
        self.seconds += time.perf_counter() - self._t0
        self.tokens += self._n
        self.passes += 1

    def gflops(self) -> float:
        return 2 * self.linear_params * self.tokens / self.seconds / 1e9 if self.seconds else 0.0


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def load(args, quant: str = "none"):
    if (
        args.tiny
    ):  # the tests' tiny pair: a 2-layer Qwen2 target and a noisy copy as draft, character vocabulary
        sys.path.insert(0, str(HERE.parent / "tests"))
        from conftest import make_char_tokenizer, make_tiny_model, noisy_copy

        from autojudge.core.models import LoadedModel, ModelPair

        tok = make_char_tokenizer()
        t = make_tiny_model("qwen2", seed=0)
        d = noisy_copy(t, 0.15, seed=1)
        lm = lambda n, m: LoadedModel(n, m, tok, None, torch.float32, torch.device("cpu"))  # noqa: E731
        return ModelPair(draft=lm("tiny-draft", d), target=lm("tiny-target", t), tokenizer=tok)
    from autojudge.core import presets
    from autojudge.core.models import load_pair

    return load_pair(presets.DEFAULT_DRAFT, presets.DEFAULT_TARGET, dtype=args.dtype, quant=quant)


def task_of(args):
    from autojudge.plugins.manager import get_task

    return get_task("toy-arith" if args.tiny else args.task)


def worker_mine(args) -> dict:
    from autojudge.core.mining.run import mine_task
    from autojudge.core.mining.steps import MiningConfig
    from autojudge.core.mining.store import MinedStore

    cfg_name = args.worker
    pair = load(args, quant="int8" if cfg_name == "batched-int8" else "none")
    meter = PassMeter(pair.target.model)
    task = task_of(args)
    limit = args.seq_limit if cfg_name == "sequential" else args.limit
    driver = {"sequential": "sequential", "pipelined": "pipelined"}.get(cfg_name, "batched")
    inflight = {"sequential": 1, "pipelined": 4}.get(cfg_name, args.inflight)
    if inflight is None:  # what `aj mine` picks on this machine (sized to its free memory)
        from autojudge.core.mining.batched import default_inflight

        inflight = default_inflight(pair.target.model, pair.draft.model, args.max_new_tokens)
    config = MiningConfig(
        max_new_tokens=args.max_new_tokens, max_mismatches=args.max_mismatches, inflight=inflight
    )
    out = Path(tempfile.mkdtemp(prefix=f"bench-tp-{cfg_name}-"))
    t0 = time.perf_counter()
    backend = "vllm" if cfg_name == "vllm" else "transformers"
    vopts = {"kv_cache_gib": 2.0} if backend == "vllm" else None
    summary = mine_task(task, pair, out, split=task.mining_split, limit=limit, data_dir=args.data_dir, config=config,
                        progress=False, backend=backend, driver=driver, vllm_options=vopts)  # fmt: skip
    seconds = time.perf_counter() - t0
    rows = MinedStore(out).label_rows()
    return {
        "config": cfg_name,
        "prompts": summary["prompts"],
        "labels": summary["labels"],
        "important": summary["important"],
        "truncated": summary.get("truncated"),
        "seconds": seconds,
        "labels_per_hour": summary["labels"] / seconds * 3600,
        "target_tokens_per_label": summary["target_tokens"] / max(summary["labels"], 1),
        "peak_rss_gb": peak_rss_gb(),
        "target_gflops": meter.gflops(),
        "target_pass_seconds": meter.seconds,
        "target_tokens_per_pass": meter.tokens / max(meter.passes, 1),
        "label_keys": sorted((r["prompt_id"], r["position"], r["draft_token"], r["label"]) for r in rows),
        "dtype": str(pair.target.dtype).replace("torch.", ""),
        "inflight": inflight,
    }


def worker_eval(args) -> dict:
    from autojudge.core.batched import BatchedEngine
    from autojudge.core.engine import SpeculativeEngine
    from autojudge.core.judge import TopKJudge

    pair = load(args)
    task = task_of(args)
    split = "train" if args.tiny else "test"
    exs = task.load(split, data_dir=args.data_dir, limit=args.eval)
    prompts = [task.render_prompt(e, pair.tokenizer) for e in exs]
    judge = TopKJudge(args.topk)
    eng = BatchedEngine(pair.target.model, pair.draft.model, pair.tokenizer)
    common = dict(k=args.k, max_new_tokens=args.max_new_tokens, stop_sequences=task.stop_sequences)
    out = {"config": "eval", "problems": len(prompts), "batch": args.eval_batch}
    for mode in ("ar", "sd", "judge"):
        t0 = time.perf_counter()
        res = eng.generate_batch(prompts, mode=mode, judge=judge if mode == "judge" else None,
                                 max_batch=args.eval_batch, **common)  # fmt: skip
        s = time.perf_counter() - t0
        toks = sum(len(r.tokens) for r in res)
        out[mode] = {"problems_per_hour": len(prompts) / s * 3600, "tokens_per_s": toks / s, "seconds": s}
    one = SpeculativeEngine(pair.target.model, pair.draft.model, pair.tokenizer)
    n1 = min(len(prompts), args.latency_problems)
    t0 = time.perf_counter()
    toks = sum(len(one.generate(p, mode="sd", **common).tokens) for p in prompts[:n1])
    s = time.perf_counter() - t0
    out["sd_batch1"] = {"problems_per_hour": n1 / s * 3600, "tokens_per_s": toks / s, "seconds": s}
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--data-dir", default=os.environ.get("AJ_DATA_DIR"))
    ap.add_argument("--configs", default=",".join(MINING_CONFIGS[:4]) + ",eval",
                    help=f"comma list of {', '.join(MINING_CONFIGS)}, eval")  # fmt: skip
    ap.add_argument("--limit", type=int, default=16, help="prompts mined by the in-flight drivers")
    ap.add_argument("--seq-limit", type=int, default=3, help="prompts mined by the sequential driver")
    ap.add_argument(
        "--inflight",
        type=int,
        default=None,
        help="batched drivers' prompts in flight [aj mine's default: sized to the free memory]",
    )
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--max-mismatches", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--eval", type=int, default=16, help="evaluation problems (test split)")
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--latency-problems", type=int, default=2)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--topk", type=int, default=4)
    ap.add_argument("--tiny", action="store_true", help="tiny random pair on the toy task (seconds)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tiny:
        args.dtype, args.max_new_tokens = "float32", min(args.max_new_tokens, 24)
    if args.worker:
        res = worker_eval(args) if args.worker == "eval" else worker_mine(args)
        print("RESULT " + json.dumps(res))
        return

    model, flags = cpu_info()
    print(f"cpu: {model} | {' '.join(flags)} | threads {torch.get_num_threads()} | torch {torch.__version__}")
    if args.tiny:
        peak = {"float32": gemm_peak(64, 128, torch.float32)}
    else:
        dt = getattr(torch, args.dtype)
        peak = {args.dtype: gemm_peak(1536, 8960, dt)}
    print(f"GEMM peak (M=64, target MLP shape): {', '.join(f'{k} {v:.1f} GFLOP/s' for k, v in peak.items())}")
    results = []
    for name in args.configs.split(","):
        cmd = [sys.executable, __file__, "--worker", name, *sys.argv[1:]]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{name}: FAILED after {time.perf_counter() - t0:.0f} s\n{proc.stderr[-3000:]}")
            continue
        results.append(json.loads(line[7:]))
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", flush=True)

    mined = [r for r in results if r["config"] != "eval"]
    ref = next((r for r in mined if r["config"] == "sequential"), None)
    base = ref["labels_per_hour"] if ref else None
    print(
        "\n| driver | in flight | dtype | prompts | labels | important | truncated | labels/hour | vs sequential "
        "| target tokens/label | same labels | peak RSS GB | target GFLOP/s | % of GEMM peak "
        "| tokens/target pass | wall time in target passes |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in mined:
        same = "-"
        if ref is not None and r is not ref:
            pids = {k[0] for k in ref["label_keys"]}
            mine = sorted(tuple(k) for k in r["label_keys"] if k[0] in pids)
            same = "yes" if mine == sorted(tuple(k) for k in ref["label_keys"]) else "NO"
        pk = peak.get(r["dtype"])
        pct = f"{100 * r['target_gflops'] / pk:.0f}%" if pk else "-"
        rel = f"{r['labels_per_hour'] / base:.2f}x" if base else "-"
        print(f"| {r['config']} | {r['inflight']} | {r['dtype']} | {r['prompts']} | {r['labels']} | {r['important']} | "
              f"{r['truncated']} | {r['labels_per_hour']:.1f} | {rel} | {r['target_tokens_per_label']:.0f} | {same} | "
              f"{r['peak_rss_gb']:.2f} | {r['target_gflops']:.1f} | {pct} | "
              f"{r['target_tokens_per_pass']:.1f} | "
              f"{100 * r['target_pass_seconds'] / r['seconds']:.0f}% |")  # fmt: skip
    for r in results:
        if r["config"] == "eval":
            print(
                f"\nevaluation, {r['problems']} problems, batch {r['batch']} (peak RSS {r['peak_rss_gb']:.2f} GB):"
            )
            print("| mode | problems/hour | tokens/s (throughput) |\n|---|---:|---:|")
            for mode in ("ar", "sd", "judge", "sd_batch1"):
                m = r[mode]
                label = "sd, batch 1 (latency)" if mode == "sd_batch1" else mode
                print(f"| {label} | {m['problems_per_hour']:.0f} | {m['tokens_per_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": [model, flags], "peak": peak, "results": results}, indent=1))


if __name__ == "__main__":
    main()
