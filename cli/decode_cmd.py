"""``aj decode``: generate from one prompt with target-only, lossless or judged speculative decoding."""

from __future__ import annotations

import json
import sys

import click

from autojudge.core.backends import BACKENDS

JUDGE_HELP = (
    "Judge for --mode judge: a shipped judge's name (`aj judges list`), a judge artifact (.safetensors from "
    "`aj train`), or a baseline: "
    "'never' (lossless), 'always', 'topk:K' (accept if the draft token is in the target's top-K), "
    "'prob:P' (accept if the target gives the draft token probability >= P)."
)


@click.command()
@click.option(
    "--draft",
    default=None,
    help="Draft model: preset name, HF directory, .gguf file or hub id. [default: the default pair]",
)
@click.option(
    "--target", default=None, help="Target model (same forms as --draft). [default: the default pair]"
)
@click.option("--prompt", "-p", required=True, help="The user message ('-' reads stdin).")
@click.option("--raw", is_flag=True, help="Send the prompt as is, without the target's chat template.")
@click.option(
    "--mode",
    type=click.Choice(["ar", "sd", "judge"]),
    default=None,
    help="ar: target only; sd: lossless speculative; judge: lossy with a judge. [default: judge if --judge else sd]",
)
@click.option("--judge", "judge_spec", default=None, help=JUDGE_HELP)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Override the judge artifact's threshold (accept iff P(important) < T).",
)
@click.option(
    "-k",
    "--draft-length",
    "k",
    default="5",
    show_default=True,
    help="Draft tokens per cycle, or 'auto': the k maximising predicted tokens/s from this machine's measured "
    "draft-step and verify costs and the pair's measured acceptance (measured once, cached; docs/engine.md).",
)
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--stop", multiple=True, help="Stop sequence (repeatable).")
@click.option("--dtype", default=None, help="bfloat16 (CPU default), float32, float16.")
@click.option(
    "--quant",
    type=click.Choice(["none", "int8"]),
    default="none",
    show_default=True,
    help="int8: int8 weight-only linears in both models after loading (CPU: ~1.8x faster 1-token steps, slower multi-token verifies, "
    "greedy output close to but not always identical with bfloat16; docs/engine.md). transformers backend only.",
)
@click.option(
    "--draft-quant",
    type=click.Choice(["none", "int8"]),
    default=None,
    help="Quantize the draft only (default: as --quant). int8 draft + float target: still lossless, the draft's "
    "steps ~2x cheaper on CPU, the lever that makes SD pay off there (docs/engine.md).",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="transformers backend only (vLLM runs where its build runs).",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="transformers",
    show_default=True,
    help="vllm: the judge inside vLLM's speculative decoding (needs the vllm extra; docs/vllm.md).",
)
@click.option("--json", "as_json", is_flag=True, help="Print text and metrics as JSON.")
def decode(
    draft,
    target,
    prompt,
    raw,
    mode,
    judge_spec,
    threshold,
    k,
    max_new_tokens,
    stop,
    dtype,
    quant,
    draft_quant,
    device,
    backend,
    as_json,
):
    """Generate from one prompt and print the text and the decoding metrics."""

    from autojudge.core import presets
    from autojudge.core.backends import open_engine
    from autojudge.core.models import load_model, load_pair
    from autojudge.judges.spec import load_judge_spec

    if prompt == "-":
        prompt = sys.stdin.read()
    k_auto = str(k).lower() == "auto"
    if not k_auto:
        try:
            k = int(k)
        except ValueError:
            raise click.BadParameter(f"expected an integer or 'auto', got {k!r}", param_hint="'-k'") from None
    if k_auto and backend == "vllm":
        raise click.UsageError(
            "-k auto measures the transformers engine: use --backend transformers or a number"
        )
    mode = mode or ("judge" if judge_spec else "sd")
    if mode == "judge" and not judge_spec:
        raise click.UsageError("--mode judge needs --judge")
    if mode == "judge":  # before the models load: a bad --judge costs no model loading
        from autojudge.cli.checks import check_judge_option

        check_judge_option(judge_spec, threshold)
    target = target or presets.DEFAULT_TARGET
    if backend == "vllm" and (quant != "none" or draft_quant not in (None, "none")):
        raise click.UsageError(
            "--quant int8 and --draft-quant int8 quantize the transformers models: use --backend transformers"
        )
    if backend == "vllm":
        res, judge_info = _decode_vllm(target, draft or presets.DEFAULT_DRAFT, prompt, raw, mode, judge_spec, threshold,
                                       k, max_new_tokens, stop, dtype)  # fmt: skip
        _print(res, mode, judge_info, as_json)
        return
    if mode == "ar":
        tgt = load_model(target, dtype=dtype, device=device, quant=quant)
        dft, tokenizer = None, tgt.tokenizer
    else:
        pair = load_pair(draft or presets.DEFAULT_DRAFT, target, dtype=dtype, device=device, quant=quant,
                         draft_quant=draft_quant)  # fmt: skip
        tgt, dft, tokenizer = pair.target, pair.draft, pair.tokenizer
    judge = None
    if mode == "judge":
        judge = load_judge_spec(judge_spec, target=tgt, draft=dft, threshold=threshold, device=device)
    text = (
        prompt
        if raw
        else tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    )
    engine = open_engine("transformers", tgt, dft, tokenizer=tokenizer)
    if k_auto:
        if mode == "ar":
            k = 1  # target-only decoding drafts nothing
        else:
            from autojudge.core.kchoice import choose_k

            pair_key = {"target": tgt.fingerprint(), "draft": dft.fingerprint(), "dtype": str(tgt.dtype),
                        "quant": getattr(tgt, "quant", "none"), "draft_quant": getattr(dft, "quant", "none"),
                        "device": str(device)}  # fmt: skip
            choice = choose_k(engine, pair_key, mode=mode, judge=judge)
            k = choice["k"]
            click.echo(
                f"-k auto: k = {k} (acceptance {choice['alpha']:.2f}, draft step {1e3 * choice['draft_step_s']:.1f} ms, "
                f"predicted {choice['predicted_speedup_vs_ar']:.2f}x target-only; cached in the autojudge cache)",
                err=True,
            )
    res = engine.generate(
        text, mode=mode, judge=judge, k=k, max_new_tokens=max_new_tokens, stop_sequences=stop
    )
    _print(res, mode, judge.summary() if judge else None, as_json)


def _decode_vllm(target, draft, prompt, raw, mode, judge_spec, threshold, k, max_new_tokens, stop, dtype):
    """``aj decode --backend vllm``: the same generation on vLLM (fingerprints and features checked first)."""
    from autojudge.core.backends import open_engine
    from autojudge.core.backends.vllm import VLLMUnavailableError
    from autojudge.judges.spec import load_judge_spec

    try:
        engine = open_engine("vllm", target, None if mode == "ar" else draft, k=k, dtype=dtype)
    except VLLMUnavailableError as e:
        raise click.ClickException(str(e)) from e
    judge = None
    if (
        mode == "judge"
    ):  # checked against the models vLLM runs; the judge reaches the workers as its description
        fp = engine.vllm.fingerprints()
        judge = load_judge_spec(judge_spec, target=fp["target"], draft=fp.get("draft"), threshold=threshold)
    tokenizer = engine.tokenizer
    text = (
        prompt
        if raw
        else tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    )
    res = engine.generate(
        text, mode=mode, judge=judge, k=k, max_new_tokens=max_new_tokens, stop_sequences=stop
    )
    return res, (judge.summary() if judge else None)


def _print(res, mode, judge_info, as_json):
    if as_json:
        click.echo(json.dumps({"mode": mode, "judge": judge_info, **res.as_dict()}, indent=2))
        return
    click.echo(res.text)
    m = res.metrics
    click.echo(
        f"\n[{mode}] {m.num_output_tokens} tokens in {m.wall_time:.2f}s ({m.tokens_per_s:.2f} tok/s), "
        f"finish={res.finish_reason}, cycles={m.num_drafts}, "
        f"mean_acceptance_length={m.mean_acceptance_length:.2f}, "
        f"draft_acceptance_rate={m.draft_acceptance_rate:.2f}, judge_accepted={m.num_judge_accepted}",
        err=True,
    )
