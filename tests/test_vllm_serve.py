"""``aj serve``: vLLM's OpenAI server with the judge, answering on 127.0.0.1 (marked ``integration`` and ``vllm``).

The server runs SmolLM2-135M with a layer-dropped draft in float32; its completion must be
the token sequence autojudge's transformers engine produces with the same judge, and
``/autojudge/metrics`` must count the judge's accepts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from vllm_helpers import QUESTIONS, chat, linear_judge_artifact, save_layer_dropped_draft

from autojudge.core.backends.vllm import require_vllm
from autojudge.core.compare.llm import LLMEquivalenceChecker, OpenAIChatComparer, ReplyCache
from autojudge.core.engine import SpeculativeEngine
from autojudge.core.models import load_model
from autojudge.judges.spec import load_judge_spec

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

K, N = 4, 40
START_TIMEOUT = 900  # seconds: two vLLM processes start on a busy 2-core CI machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: dict | None = None, timeout: float = 300) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {"error": e.read().decode(errors="replace")}


def test_aj_serve_dry_run_wires_the_plugins(tmp_path):
    require_vllm()
    draft_dir = save_layer_dropped_draft(tmp_path / "draft")
    cmd = [sys.executable, "-m", "autojudge.cli.main", "serve", "--judge", "topk:3", "--target", "smollm2-135m-instruct",
           "--draft", str(draft_dir), "-k", "3", "--dry-run", "--", "--max-num-seqs", "4"]  # fmt: skip
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout)
    argv = out["argv"]
    assert argv[:2] == ["vllm", "serve"] and argv[-2:] == ["--max-num-seqs", "4"]
    spec = json.loads(argv[argv.index("--speculative-config") + 1])
    assert spec == {"method": "draft_model", "model": str(draft_dir), "num_speculative_tokens": 3}
    assert argv[argv.index("--worker-extension-cls") + 1].endswith("AutojudgeWorkerExtension")
    assert argv[argv.index("--shutdown-timeout") + 1] == "120"  # SIGTERM drains in-flight requests (issue 17)
    assert json.loads(out["env"]["AUTOJUDGE_VLLM_JUDGE"])["spec"] == "topk:3"
    assert "autojudge" in out["env"]["VLLM_PLUGINS"].split(",")


def test_aj_serve_answers_with_the_judge(tmp_path):
    require_vllm()
    draft_dir = save_layer_dropped_draft(tmp_path / "draft")
    target = load_model("smollm2-135m-instruct", dtype="float32")
    draft = load_model(str(draft_dir), dtype="float32")
    artifact = linear_judge_artifact(tmp_path / "judge.safetensors", target, draft)
    ids = target.tokenizer(chat(target.tokenizer, QUESTIONS[2]), add_special_tokens=False)["input_ids"]
    ref = SpeculativeEngine(target.model, draft.model, target.tokenizer).generate(
        ids,
        mode="judge",
        judge=load_judge_spec(str(artifact), target=target, draft=draft),
        k=K,
        max_new_tokens=N,
    )
    assert ref.metrics.num_judge_accepted > 0

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    cmd = [sys.executable, "-m", "autojudge.cli.main", "serve", "--judge", str(artifact),
           "--target", "smollm2-135m-instruct", "--draft", str(draft_dir), "-k", str(K), "--port", str(port),
           "--dtype", "float32", "--max-model-len", "1024", "--kv-cache-gib", "0.25",
           "--", "--max-num-seqs", "4", "--distributed-executor-backend", "uni"]  # fmt: skip
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, f"aj serve exited: {(tmp_path / 'serve.log').read_text()[-3000:]}"
            try:
                if http(base + "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (
                f"no answer in {START_TIMEOUT}s: {(tmp_path / 'serve.log').read_text()[-3000:]}"
            )
            time.sleep(2)
        status, res = http(base + "/v1/completions", {
            "model": "smollm2-135m-instruct", "prompt": ids, "max_tokens": N, "temperature": 0,
            "return_token_ids": True,
        })  # fmt: skip
        assert status == 200, res
        choice = res["choices"][0]
        assert choice["token_ids"] == ref.tokens
        assert choice["text"] == ref.text
        status, stats = http(base + "/autojudge/metrics")
        assert status == 200, stats
        # vLLM verifies k drafts in the last cycle too (cut at max_tokens): counters >= the engine's
        assert stats["num_judge_accepted"] >= ref.metrics.num_judge_accepted > 0
        assert stats["num_accepted_tokens"] >= ref.metrics.num_accepted_tokens
        judged = stats["num_judge_accepted"]
        assert stats["judge"]["spec"] == str(artifact.resolve())
        # a sampled request is served too, lossless (no judge accepts added)
        status, _ = http(base + "/v1/completions", {"model": "smollm2-135m-instruct", "prompt": ids, "max_tokens": 8,
                                                     "temperature": 1.0, "seed": 3})  # fmt: skip
        assert status == 200
        assert http(base + "/autojudge/metrics")[1]["num_judge_accepted"] == judged
        # the LLM answer-comparison checker (issue 10) speaks to a real vLLM OpenAI server
        backend = OpenAIChatComparer(base + "/v1", "smollm2-135m-instruct", timeout=300, max_retries=1)
        cache = ReplyCache(tmp_path / "judge-cache.sqlite3")
        checker = LLMEquivalenceChecker(backend, cache=cache)
        result = checker.check("What is 2 + 3?", "2 + 3 = 5. The answer is 5.", "The answer is 6.")
        assert len(result.votes) == 2 and len(result.replies) == 2 and all(r.strip() for r in result.replies)
        assert result.cached == 0 and checker.stats.as_dict()["backend_calls"] == 2
        again = LLMEquivalenceChecker(backend, cache=ReplyCache(tmp_path / "judge-cache.sqlite3"))
        assert (
            again.check("What is 2 + 3?", "2 + 3 = 5. The answer is 5.", "The answer is 6.").replies
            == result.replies
        )
        assert again.stats.as_dict()["backend_calls"] == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
