"""GPU cost model of the engine with random-weight models of the default pair's real sizes.

Speed does not depend on weight values, so one short call on a lent GPU (no network, no model
files: the configs are in ``bench/data/configs/``) measures what the CPU cannot tell us:

* the target's 1-token step and the draft's, on a ``--cache``-token KV cache;
* the verify cost ``v(k)`` = a (k+1)-token target forward / a 1-token one, k = 1..64;
* the judge's cost per call (the fused linear judge on ``dd+dt+x`` features);
* the engine's real cycle time for lossless SD and judged SD at several k (random weights:
  lossless SD accepts ~nothing, the judged run uses a judge that accepts every draft token,
  so both cycle shapes are timed), eager, with the engine's dynamic KV cache;
* the target step with a static cache and CUDA graphs (transformers ``StaticCache`` +
  ``torch.compile(mode="reduce-overhead")``), when ``--cuda-graphs`` and time allow: the
  headroom an engine with graphs would have (our engine does not capture graphs yet);
* the tokens per cycle each SD cycle shape needs to break even (``t_cycle(k) / t_step``) and to
  reach 1.5x; with ``--tau-sd`` / ``--tau-judge`` (JSON ``{"k": tau}``: tokens per cycle measured
  on a CPU with the real weights, e.g. by ``bench/bench_engine.py``) the predicted speed-up
  ``tau(k) * t_step / t_cycle(k)``.

    python bench/bench_gpu.py                      # on the GPU machine (one call, < 8 min)
    python bench/bench_gpu.py --tiny --device cpu  # smoke run (CI): tiny configs on CPU

Works without autojudge installed (the GPU machine gets a copy of the repository): it then
imports the package from this checkout. Prints a Markdown table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bench" / "data" / "configs"
DRAFT, TARGET = "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"
VERIFY_KS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
CYCLE_KS = (4, 8, 16)


def import_autojudge() -> None:
    """Make ``autojudge`` importable from this checkout when it is not installed (namespace shim)."""
    try:
        import autojudge.core.engine  # noqa: F401
    except ImportError:
        shim = Path(tempfile.mkdtemp(prefix="aj-shim-")) / "autojudge"
        shim.mkdir()
        for sub in ("core", "judges", "plugins", "sandbox", "cli"):
            (shim / sub).symlink_to(REPO / sub, target_is_directory=True)
        sys.path.insert(0, str(shim.parent))


def build(name: str, *, tiny: bool, dtype: torch.dtype, device: str) -> torch.nn.Module:
    """A random-weight causal LM with ``name``'s config (``tiny``: 2 layers, hidden 64, same family)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads((CONFIGS / f"{name}.json").read_text())
    raw = {k: v for k, v in raw.items() if not k.startswith("_")}
    if tiny:
        raw.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=512, max_window_layers=2, layer_types=["full_attention"] * 2,
                   bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    config = AutoConfig.for_model(**raw)
    torch.manual_seed(0 if name == TARGET else 1)  # different weights even when the tiny configs agree
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after one warm-up."""
    fn()
    out = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def step_costs(model, cache: int, ks, vocab: int, device: str, reps: int) -> dict[int, float]:
    """Seconds of a forward (logits included) over k+1 new tokens on a ``cache``-token KV cache (k=0: a step),
    measured as ``aj decode -k auto`` measures them (:func:`autojudge.core.kchoice.time_pass`)."""
    from autojudge.core.kchoice import time_pass
    from autojudge.core.runner import ModelRunner

    r = ModelRunner(model)
    prefix = torch.randint(3, vocab, (cache,), device=device)
    return {k: time_pass(r, prefix, k + 1, reps) for k in (0, *ks)}


@torch.inference_mode()
def judge_cost(h_target: int, h_draft: int, device: str, reps: int) -> float:
    """Seconds per call of the fused linear judge on ``dd+dt+x`` (one row: a mismatch)."""
    from autojudge.core.judge import LinearJudge

    judge = LinearJudge(
        {"dd": torch.randn(h_draft), "dt": torch.randn(h_target), "x": torch.randn(3)},
        bias=0.0, threshold=0.5, blocks=("dd", "dt", "x"),
    ).to(device)  # fmt: skip
    from autojudge.core.judge import MismatchFeatures

    vocab = 151936
    feats = MismatchFeatures(
        draft_tokens=torch.tensor([5], device=device), target_tokens=torch.tensor([6], device=device),
        target_logits=torch.randn(1, vocab, device=device), target_hidden=torch.randn(1, h_target, device=device),
        draft_hidden=torch.randn(1, h_draft, device=device),
    )  # fmt: skip

    def call():
        feats._extras = None  # the extras (softmax over the vocabulary) are part of each call's cost
        return judge.accept(feats)

    return timed(call, device, reps * 10)


@torch.inference_mode()
def cycle_times(target, draft, ks, prompt_len: int, new: int, vocab: int, device: str) -> dict[str, dict]:
    """Engine cycles (seconds per cycle, tokens per cycle) of lossless and judged SD on random weights."""
    from autojudge.core.engine import SpeculativeEngine
    from autojudge.core.judge import LinearJudge

    eng = SpeculativeEngine(target, draft, None)
    # a judge that accepts every mismatching draft token: times the judged cycle at its full length
    accept_all = LinearJudge({"dt": torch.zeros(target.config.hidden_size), "x": torch.zeros(3)}, bias=-30.0,
                             threshold=0.5, blocks=("dt", "x")).to(device)  # fmt: skip
    prompt = torch.randint(3, vocab, (prompt_len,)).tolist()
    out: dict[str, dict] = {}
    eng.generate(prompt, mode="sd", k=4, max_new_tokens=8, eos_token_ids=[])  # warm-up
    for mode, judge in (("ar", None), ("sd", None), ("judge", accept_all)):
        for k in (1,) if mode == "ar" else ks:
            r = eng.generate(prompt, mode=mode, judge=judge, k=k, max_new_tokens=new, eos_token_ids=[],
                             reuse_cache=False)  # fmt: skip
            m = r.metrics
            cycles = max(1, m.num_target_forwards - 1)  # the prefill (and its first token) is not a cycle
            gen, made = m.wall_time - m.prefill_time, m.num_output_tokens - 1
            out[f"{mode}:{k}"] = {
                "mode": mode, "k": k, "cycles": cycles, "tokens": m.num_output_tokens,
                "seconds_per_cycle": gen / cycles, "tokens_per_cycle": made / cycles,
                "tokens_per_s": made / gen if gen > 0 else 0.0,
            }  # fmt: skip
    return out


@torch.inference_mode()
def graph_step(model, cache: int, vocab: int, device: str, reps: int, budget_s: float) -> float | None:
    """Seconds of a 1-token target step with a static cache and CUDA graphs (None if not possible)."""
    if not device.startswith("cuda"):
        return None
    try:
        from transformers import StaticCache
    except ImportError:
        return None
    t0 = time.perf_counter()
    try:
        sc = StaticCache(config=model.config, max_cache_len=cache + 64)
        ids = torch.randint(3, vocab, (1, cache), device=device)
        model(
            input_ids=ids,
            past_key_values=sc,
            cache_position=torch.arange(cache, device=device),
            use_cache=True,
        )
        step = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)
        pos = torch.tensor([cache], device=device)
        tok = torch.randint(3, vocab, (1, 1), device=device)

        def one():
            return step(input_ids=tok, past_key_values=sc, cache_position=pos, use_cache=True).logits

        for _ in range(3):  # compile and capture
            one()
            if time.perf_counter() - t0 > budget_s:
                return None
        return timed(one, device, reps)
    except (
        Exception
    ) as e:  # a transformers/torch combination that cannot capture: say so, do not fail the run
        print(f"CUDA-graph step not measured: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def predicted(
    cycles: dict[str, dict], t_step: float, tau_sd: dict[int, float], tau_judge: dict[int, float]
) -> list[dict]:
    """Per SD cycle shape: the tokens per cycle needed to break even (``t_cycle / t_step``) and to reach
    1.5x, and, where ``tau`` (tokens per cycle of the real pair, measured on CPU) is given for that mode
    and k, the predicted speed-up over target-only ``tau * t_step / t_cycle``."""
    rows = []
    for c in cycles.values():
        if c["mode"] == "ar":
            continue
        tau = {"sd": tau_sd, "judge": tau_judge}[c["mode"]].get(c["k"])
        ratio = c["seconds_per_cycle"] / t_step
        rows.append({"mode": c["mode"], "k": c["k"], "break_even_tau": ratio, "tau_for_1_5x": 1.5 * ratio,
                     "tau": tau, "speedup": None if tau is None else tau / ratio})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    ap.add_argument("--tiny", action="store_true", help="tiny configs (a smoke run on CPU)")
    ap.add_argument("--cache", type=int, default=300, help="KV-cache length the steps run on")
    ap.add_argument("--new", type=int, default=128, help="tokens generated per cycle-time run")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--graph-budget", type=float, default=180.0, help="seconds allowed to compile/capture")
    ap.add_argument("--tau-sd", type=json.loads, default=None, help='JSON {"k": tau} for lossless SD')
    ap.add_argument("--tau-judge", type=json.loads, default=None, help='JSON {"k": tau} for judged SD')
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import_autojudge()
    t_start = time.perf_counter()
    dtype = getattr(torch, args.dtype)
    ks = (1, 2, 4) if args.tiny else VERIFY_KS
    cks = (2, 4) if args.tiny else CYCLE_KS
    if args.tiny:
        args.cache, args.new, args.reps = min(args.cache, 32), min(args.new, 16), min(args.reps, 2)
    target = build(TARGET, tiny=args.tiny, dtype=dtype, device=args.device)
    draft = build(DRAFT, tiny=args.tiny, dtype=dtype, device=args.device)
    vocab = target.config.vocab_size
    tt = step_costs(target, args.cache, ks, vocab, args.device, args.reps)
    dt = step_costs(draft, args.cache, (), vocab, args.device, args.reps)
    jc = judge_cost(target.config.hidden_size, draft.config.hidden_size, args.device, args.reps)
    cycles = cycle_times(target, draft, cks, args.cache, args.new, vocab, args.device)
    graphs = (
        graph_step(target, args.cache, vocab, args.device, args.reps, args.graph_budget)
        if args.cuda_graphs
        else None
    )
    tau_sd = {int(k): float(v) for k, v in (args.tau_sd or {}).items()}
    tau_judge = {int(k): float(v) for k, v in (args.tau_judge or {}).items()}
    pred = predicted(cycles, tt[0], tau_sd, tau_judge)

    dev = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else (platform.processor() or platform.machine())
    )
    print(f"{dev}, torch {torch.__version__}, {args.dtype}, random weights of {DRAFT} -> {TARGET}"
          f"{' (TINY configs)' if args.tiny else ''}, cache {args.cache} tokens\n")  # fmt: skip
    print(f"target step {1000 * tt[0]:.2f} ms, draft step {1000 * dt[0]:.2f} ms "
          f"(c = {dt[0] / tt[0]:.3f}), judge call {1e6 * jc:.1f} us")  # fmt: skip
    if graphs is not None:
        print(
            f"target step, static cache + CUDA graphs: {1000 * graphs:.2f} ms ({tt[0] / graphs:.2f}x the eager step)"
        )
    print("\nverify cost v(k) = (k+1)-token forward / 1-token step: "
          + ", ".join(f"k={k}: {tt[k] / tt[0]:.2f}" for k in ks))  # fmt: skip
    print("\n| mode | k | ms per cycle | tokens per cycle (random weights) | cycle / target step |")
    print("|---|---:|---:|---:|---:|")
    for c in cycles.values():
        print(f"| {c['mode']} | {c['k']} | {1000 * c['seconds_per_cycle']:.2f} | {c['tokens_per_cycle']:.2f} | "
              f"{c['seconds_per_cycle'] / tt[0]:.2f} |")  # fmt: skip
    print(
        "\ntokens per cycle an SD mode needs on this device (eager engine), and the predicted speed-up over"
    )
    print(
        "target-only where --tau-sd / --tau-judge give the tokens per cycle measured on CPU with real weights:"
    )
    print("| mode | k | break-even tokens/cycle | for 1.5x | tau given | predicted speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for p in pred:
        tau = "-" if p["tau"] is None else f"{p['tau']:.2f}"
        sp = "-" if p["speedup"] is None else f"{p['speedup']:.2f}x"
        print(
            f"| {p['mode']} | {p['k']} | {p['break_even_tau']:.2f} | {p['tau_for_1_5x']:.2f} | {tau} | {sp} |"
        )
    result = {
        "device": dev, "torch": torch.__version__, "dtype": args.dtype, "tiny": args.tiny, "cache": args.cache,
        "target_step_s": tt[0], "draft_step_s": dt[0], "judge_call_s": jc, "graph_step_s": graphs,
        "verify_cost_vs_k": {k: tt[k] / tt[0] for k in ks}, "cycles": cycles, "predicted": pred,
        "tau_sd": tau_sd, "tau_judge": tau_judge, "seconds": time.perf_counter() - t_start,
    }  # fmt: skip
    print(f"\n({result['seconds']:.0f} s)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
