"""``aj serve`` under load: many concurrent clients, then bad requests, then SIGTERM while busy.

Starts ``aj serve`` on 127.0.0.1 (SmolLM2-135M-Instruct, float32, its first ``--draft-layers``
layers as draft, ``topk:3`` judge by default), or uses a running server (``--url``), and runs:

1. **load**: ``--clients`` threads, each sending requests until ``--duration`` seconds have
   passed or it has sent ``--requests`` (whichever first), cycling through four kinds:
   ``/v1/completions`` and ``/v1/chat/completions``, streaming (SSE) and not, greedy,
   ``max_tokens`` between ``--min-tokens`` and ``--max-tokens``. A client that sees a failure keeps
   going (a failure is recorded, never retried). ``/autojudge/metrics`` and the server's
   RSS (the whole process tree, from ``/proc``) are sampled during the run;
2. **bad requests** (``--bad``): each of :data:`BAD_REQUESTS` once, then one normal request;
3. **SIGTERM** (``--sigterm``, only with a server this script started): a few requests are
   put in flight, SIGTERM goes to ``aj serve``, and the script reports how they ended and how the
   process exited.

Prints requests/s, p50/p99 latency (streaming: also time to first token), errors by status,
RSS before/after, and the metrics counters (deltas over the load phase). Only loopback traffic;
every loop is bounded in count and time. ``tests/test_serve_load.py`` runs the same code.

    python bench/bench_serve_load.py                                # 32 clients, 60 s
    python bench/bench_serve_load.py --clients 64 --duration 120 --bad --sigterm
    python bench/bench_serve_load.py --url http://127.0.0.1:8000 --model smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

MODEL = "smollm2-135m-instruct"
PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Explain what a hash table is.",
    "Give me a synonym for 'happy'.",
    "What is 12 times 7?",
    "Name a famous painting by Leonardo da Vinci.",
]
KINDS = ("completion", "completion-stream", "chat", "chat-stream")
COUNTERS = (
    "num_drafts",
    "num_draft_tokens",
    "num_accepted_tokens",
    "num_verify_steps",
    "num_judged_steps",
    "num_eligible_draft_tokens",
    "num_mismatches_reached",
    "num_judge_accepted",
)


# ---------------------------------------------------------------- HTTP client (stdlib only)


@dataclass
class Result:
    """One request's outcome."""

    kind: str
    status: int  # HTTP status; 0 = no HTTP answer (connection refused/reset, timeout)
    latency: float  # seconds from sending to the last byte
    ttft: float | None = None  # streaming: seconds to the first chunk carrying text
    completion_tokens: int = 0  # from the response's usage
    sequences: int = 0  # choices that produced text (n > 1 gives several)
    finish_reasons: list[str] = field(default_factory=list)
    error: str = ""  # body of a non-200 answer, or the exception

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


def _conn(base: str, timeout: float) -> http.client.HTTPConnection:
    u = urlsplit(base)
    assert u.hostname in ("127.0.0.1", "localhost", "::1"), f"loopback only, not {u.hostname!r}"
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)


def get_json(base: str, path: str, timeout: float = 30) -> tuple[int, dict]:
    c = _conn(base, timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        try:
            return r.status, json.loads(body or b"{}")
        except json.JSONDecodeError:
            return r.status, {"raw": body.decode(errors="replace")}
    finally:
        c.close()


def post_raw(base: str, path: str, body: bytes, timeout: float = 120) -> tuple[int, str]:
    """POST ``body`` as is (for malformed JSON); returns (status, body text)."""
    c = _conn(base, timeout)
    try:
        c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def request(base: str, kind: str, payload: dict, timeout: float = 300) -> Result:
    """Send one completion/chat request (``kind`` in :data:`KINDS`) and read the whole answer."""
    path = "/v1/chat/completions" if kind.startswith("chat") else "/v1/completions"
    stream = kind.endswith("-stream")
    payload = dict(payload, stream=stream)
    if stream:
        payload.setdefault("stream_options", {"include_usage": True})
    t0 = time.monotonic()
    c = _conn(base, timeout)
    try:
        c.request("POST", path, body=json.dumps(payload), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            return Result(kind, r.status, time.monotonic() - t0, error=r.read().decode(errors="replace"))
        if not stream:
            body = json.loads(r.read())
            choices = body.get("choices") or []
            return Result(
                kind,
                200,
                time.monotonic() - t0,
                completion_tokens=int((body.get("usage") or {}).get("completion_tokens", 0)),
                sequences=len(choices),
                finish_reasons=[ch.get("finish_reason") for ch in choices],
            )
        return _read_stream(r, kind, t0)
    except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
        return Result(kind, 0, time.monotonic() - t0, error=f"{type(e).__name__}: {e}")
    finally:
        c.close()


def _read_stream(r: http.client.HTTPResponse, kind: str, t0: float) -> Result:
    ttft = None
    usage = None
    finish: dict[int, str] = {}
    done = False
    error = ""
    for raw in r:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        chunk = json.loads(data)
        if "error" in chunk:  # vLLM reports a failure inside the stream, after the 200
            error = json.dumps(chunk["error"])
            continue
        if chunk.get("usage"):
            usage = chunk["usage"]
        for ch in chunk.get("choices") or []:
            text = ch.get("text") if "text" in ch else (ch.get("delta") or {}).get("content")
            if text and ttft is None:
                ttft = time.monotonic() - t0
            if ch.get("finish_reason"):
                finish[ch.get("index", 0)] = ch["finish_reason"]
    if not done and not error:
        error = "stream ended without [DONE]"
    return Result(
        kind,
        200,
        time.monotonic() - t0,
        ttft=ttft,
        completion_tokens=int((usage or {}).get("completion_tokens", 0)),
        sequences=len(finish),
        finish_reasons=[finish[i] for i in sorted(finish)],
        error=error,
    )


def payload_for(kind: str, i: int, max_tokens: int, model: str = MODEL) -> dict:
    """The i-th normal request of ``kind``: greedy, ``max_tokens`` tokens, one of :data:`PROMPTS`."""
    prompt = PROMPTS[i % len(PROMPTS)]
    base = {"model": model, "max_tokens": max_tokens, "temperature": 0}
    if kind.startswith("chat"):
        return {**base, "messages": [{"role": "user", "content": prompt}]}
    return {**base, "prompt": f"Question: {prompt}\nAnswer:"}


# ---------------------------------------------------------------- server process and its memory


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_rss(root: int) -> int:
    """Resident set size of ``root``'s process tree, bytes (VmRSS summed; 0 for a process gone)."""
    total = 0
    for p in tree_pids(root):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(port: int, draft_dir: Path, *, judge: str = "topk:3", k: int = 3, max_num_seqs: int = 32,
                  max_model_len: int = 512, kv_cache_gib: float = 0.5) -> list[str]:  # fmt: skip
    """``aj serve`` for SmolLM2-135M-Instruct (float32) with ``draft_dir`` as draft, on 127.0.0.1:``port``."""
    return [sys.executable, "-m", "autojudge.cli.main", "serve", "--judge", judge, "--target", MODEL,
            "--draft", str(draft_dir), "-k", str(k), "--host", "127.0.0.1", "--port", str(port),
            "--dtype", "float32", "--max-model-len", str(max_model_len), "--kv-cache-gib", str(kv_cache_gib),
            "--", "--max-num-seqs", str(max_num_seqs), "--distributed-executor-backend", "uni"]  # fmt: skip


def start_server(cmd: list[str], log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    log = open(log_path, "w")  # noqa: SIM115 - the child holds it; closed when the process is gone
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(base: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> float:
    """Seconds until ``/health`` answers 200; raises when the process dies or ``timeout`` passes."""
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"aj serve exited ({proc.returncode}): {log_path.read_text()[-3000:]}")
        try:
            if get_json(base, "/health", timeout=5)[0] == 200:
                return time.monotonic() - t0
        except OSError:
            pass
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"aj serve did not answer in {timeout:.0f}s: {log_path.read_text()[-3000:]}")
        time.sleep(2)


def stop_server(proc: subprocess.Popen, timeout: float = 60) -> int:
    """SIGTERM the process group, SIGKILL after ``timeout``; the exit code."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


# ---------------------------------------------------------------- phases


def metrics(base: str) -> dict:
    status, body = get_json(base, "/autojudge/metrics")
    if status != 200:
        raise RuntimeError(f"/autojudge/metrics answered {status}: {body}")
    return body


@dataclass
class LoadRun:
    results: list[Result]
    wall: float
    metrics_before: dict
    metrics_after: dict
    metrics_samples: list[dict]  # taken during the run, in order
    rss_before: int
    rss_samples: list[int]  # during
    rss_after: int

    def delta(self, name: str) -> int:
        return int(self.metrics_after[name]) - int(self.metrics_before[name])


def run_load(base: str, *, clients: int, duration: float, requests_per_client: int, min_tokens: int = 8,
             max_tokens: int = 32, model: str = MODEL, server_pid: int | None = None,
             sample_every: float = 2.0, timeout: float = 300) -> LoadRun:  # fmt: skip
    """``clients`` threads send requests until ``duration`` s or ``requests_per_client`` each; see the module doc."""
    results: list[Result] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration
    span = max_tokens - min_tokens + 1

    def client(c: int) -> None:
        for j in range(requests_per_client):
            if time.monotonic() >= stop_at:
                break
            i = c * requests_per_client + j
            kind = KINDS[(c + j) % len(KINDS)]
            res = request(base, kind, payload_for(kind, i, min_tokens + (i * 7) % span, model), timeout)
            with lock:
                results.append(res)

    rss = (lambda: tree_rss(server_pid)) if server_pid else (lambda: 0)
    before, rss_before = metrics(base), rss()
    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    samples, rss_samples = [], []
    hard_stop = stop_at + timeout + 30  # a client's last request may start just before stop_at
    while any(t.is_alive() for t in threads) and time.monotonic() < hard_stop:
        time.sleep(sample_every)
        samples.append(metrics(base))
        rss_samples.append(rss())
    for t in threads:
        t.join(timeout=max(0.0, hard_stop - time.monotonic()))
    wall = time.monotonic() - t0
    return LoadRun(results, wall, before, metrics(base), samples, rss_before, rss_samples, rss())


#: (name, path, body: dict, or bytes sent as is) — requests the server must refuse with a 4xx
BAD_REQUESTS: list[tuple[str, str, dict | bytes]] = [
    ("unknown model", "/v1/completions", {"model": "no-such-model", "prompt": "Hi", "max_tokens": 4}),
    ("negative max_tokens", "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": -5}),
    ("zero max_tokens", "/v1/chat/completions",
     {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 0}),
    ("huge max_tokens", "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 10**9}),
    ("huge max_tokens (chat)", "/v1/chat/completions",
     {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10**9}),
    ("prompt longer than the context", "/v1/completions",
     {"model": MODEL, "prompt": "hello " * 5000, "max_tokens": 4}),
    ("prompt longer than the context (chat)", "/v1/chat/completions",
     {"model": MODEL, "messages": [{"role": "user", "content": "hello " * 5000}], "max_tokens": 4}),
    ("malformed JSON", "/v1/completions", b'{"model": "smollm2-135m-instruct", "prompt": "Hi", '),
    ("not an object", "/v1/chat/completions", b"[1, 2, 3]"),
    ("missing prompt", "/v1/completions", {"model": MODEL, "max_tokens": 4}),
    ("negative temperature", "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 4,
                                                 "temperature": -1}),
    ("top_p out of range", "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 4, "top_p": 7}),
    ("n = 0", "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 4, "n": 0}),
    ("unknown token id in prompt", "/v1/completions", {"model": MODEL, "prompt": [1, 10**8], "max_tokens": 4}),
    ("invalid JSON schema", "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 4,
                                                "structured_outputs": {"json": "{not a schema"}}),
    # vLLM 0.32 refuses these two with speculative decoding (400, clear message)
    ("n = 2, greedy", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                                               "max_tokens": 4, "temperature": 0, "n": 2}),
    ("logit_bias", "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 4, "logit_bias": {"100": 5}}),
]  # fmt: skip

#: (name, kind, extra payload, judged) — valid requests with parameters the judge does not handle
#: (judged False: served lossless, the judge sees none of their draft tokens) or that it handles
#: as usual (judged True: greedy with logprobs, min_tokens, stop strings). All must answer 200.
UNJUDGED_REQUESTS: list[tuple[str, str, dict, bool]] = [
    ("temperature 0.8", "completion", {"temperature": 0.8, "seed": 1}, False),
    ("temperature 0.8, top_p, stream", "chat-stream", {"temperature": 0.8, "top_p": 0.9, "seed": 2}, False),
    ("n = 2, temperature 0.7", "completion", {"n": 2, "temperature": 0.7, "seed": 3}, False),
    ("presence penalty", "completion", {"presence_penalty": 0.5}, False),
    ("repetition penalty", "chat", {"repetition_penalty": 1.2}, False),
    ("choice grammar", "completion", {"structured_outputs": {"choice": ["yes", "no"]}}, False),
    ("regex grammar", "chat", {"structured_outputs": {"regex": "[0-9]{1,3}"}}, False),
    ("json schema", "chat", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "n", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}}, False),
    ("logprobs", "completion", {"logprobs": 3}, True),
    ("logprobs (chat)", "chat-stream", {"logprobs": True, "top_logprobs": 2}, True),
    ("min_tokens + stop", "completion-stream", {"min_tokens": 4, "stop": ["."]}, True),
]  # fmt: skip


def run_bad(base: str, model: str = MODEL, timeout: float = 300) -> list[dict]:
    """Every bad and unjudged request once, one at a time; one row each.

    A row: name, expected status (``"4xx"``/``"200"``), status, message excerpt; for unjudged
    requests also the change of ``num_draft_tokens``, ``num_eligible_draft_tokens`` and
    ``num_judge_accepted`` over the request (exact: nothing else is in flight).
    """
    rows = []
    for name, path, body in BAD_REQUESTS:
        if isinstance(body, dict):
            body = json.dumps({**body, "model": model} if body.get("model") == MODEL else body).encode()
        try:
            status, text = post_raw(base, path, body, timeout)
        except (OSError, http.client.HTTPException) as e:
            status, text = 0, f"{type(e).__name__}: {e}"
        rows.append({"name": name, "expect": "4xx", "status": status, "message": text})
    names = ("num_draft_tokens", "num_eligible_draft_tokens", "num_judge_accepted")
    for name, kind, extra, judged in UNJUDGED_REQUESTS:
        before = metrics(base)
        res = request(base, kind, {**payload_for(kind, 0, 8, model), **extra}, timeout)
        after = metrics(base)
        rows.append({"name": name, "expect": "200", "status": res.status, "message": res.error[:300],
                     "judged": judged, "completion_tokens": res.completion_tokens, "sequences": res.sequences,
                     **{f"delta_{n}": after[n] - before[n] for n in names}})  # fmt: skip
    return rows


def run_sigterm(base: str, proc: subprocess.Popen, *, inflight: int = 4, max_tokens: int = 32,
                model: str = MODEL, wait_running: float = 60, timeout: float = 180) -> dict:  # fmt: skip
    """Put ``inflight`` requests in flight, SIGTERM ``aj serve`` once they run, report how all ended."""
    results: list[Result] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        kind = KINDS[i % len(KINDS)]
        res = request(base, kind, payload_for(kind, i, max_tokens, model), timeout)
        with lock:
            results.append(res)

    before = metrics(base)["num_verify_steps"]
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(inflight)]
    for t in threads:
        t.start()
    # wait until the engine is decoding (verification steps advance), then signal
    t0 = time.monotonic()
    while metrics(base)["num_verify_steps"] == before and time.monotonic() - t0 < wait_running:
        time.sleep(0.2)
    t_sig = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)  # the API server process only (what a supervisor does)
    time.sleep(1.0)
    late = request(base, "chat", payload_for("chat", 0, 8, model), timeout=30)  # a new request while draining
    for t in threads:
        t.join(timeout=timeout)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    return {
        "results": results,
        "late": late,
        "returncode": code,
        "exit_s": time.monotonic() - t_sig,
        "alive_threads": sum(t.is_alive() for t in threads),
    }


# ---------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def summarize(run: LoadRun) -> dict:
    ok = [r for r in run.results if r.ok]
    by_status: dict[str, int] = {}
    for r in run.results:
        if not r.ok:
            key = str(r.status) if r.status != 200 else "200 with error"
            by_status[key] = by_status.get(key, 0) + 1
    stream_ttft = [r.ttft for r in ok if r.ttft is not None]
    tokens = sum(r.completion_tokens for r in ok)
    return {
        "requests": len(run.results),
        "ok": len(ok),
        "errors_by_status": by_status,
        "wall_s": round(run.wall, 2),
        "requests_per_s": round(len(ok) / run.wall, 3) if run.wall else 0.0,
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / run.wall, 2) if run.wall else 0.0,
        "latency_p50_s": round(pct([r.latency for r in ok], 0.5), 3),
        "latency_p99_s": round(pct([r.latency for r in ok], 0.99), 3),
        "stream_ttft_p50_s": round(pct(stream_ttft, 0.5), 3),
        "stream_ttft_p99_s": round(pct(stream_ttft, 0.99), 3),
        "by_kind": {k: sum(r.kind == k for r in ok) for k in KINDS},
        "rss_before_mib": round(run.rss_before / 2**20, 1),
        "rss_max_during_mib": round(max(run.rss_samples, default=0) / 2**20, 1),
        "rss_after_mib": round(run.rss_after / 2**20, 1),
        "rss_timeline_mib": [round(x / 2**20) for x in (run.rss_before, *run.rss_samples, run.rss_after)],
        "metrics_delta": {name: run.delta(name) for name in COUNTERS},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="use this running server (loopback) instead of starting aj serve")
    ap.add_argument("--model", default=MODEL, help="model name in the API")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument(
        "--duration", type=float, default=60.0, help="seconds of load (clients stop sending then)"
    )
    ap.add_argument("--requests", type=int, default=1000, help="at most this many requests per client")
    ap.add_argument("--min-tokens", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=4, help="requests (one of each kind) before measuring")
    ap.add_argument("--bad", action="store_true", help="then send the bad and unjudged requests")
    ap.add_argument("--sigterm", action="store_true", help="then SIGTERM the server with requests in flight")
    ap.add_argument("--judge", default="topk:3")
    ap.add_argument("-k", type=int, default=3)
    ap.add_argument("--draft-layers", type=int, default=8)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--kv-cache-gib", type=float, default=0.5)
    ap.add_argument("--start-timeout", type=float, default=900)
    ap.add_argument(
        "--workdir", type=Path, default=None, help="draft and server log here [default: a temp dir]"
    )
    ap.add_argument("--out", type=Path, help="write the summary as JSON")
    args = ap.parse_args(argv)

    import tempfile

    proc = None
    work = args.workdir or Path(tempfile.mkdtemp(prefix="aj-serve-load-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    try:
        if args.url:
            base = args.url.rstrip("/")
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from vllm_helpers import save_layer_dropped_draft

            draft = work / f"draft{args.draft_layers}"
            if not (draft / "config.json").is_file():
                save_layer_dropped_draft(draft, layers=args.draft_layers)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            cmd = serve_command(port, draft, judge=args.judge, k=args.k, max_num_seqs=args.max_num_seqs,
                                kv_cache_gib=args.kv_cache_gib)  # fmt: skip
            proc = start_server(cmd, work / "serve.log")
            out["start_s"] = round(wait_ready(base, proc, work / "serve.log", args.start_timeout), 1)
            print(f"server up in {out['start_s']} s (log: {work / 'serve.log'})", file=sys.stderr)
        for i, kind in enumerate(KINDS[: args.warmup]):
            request(base, kind, payload_for(kind, i, args.min_tokens, args.model))
        run = run_load(base, clients=args.clients, duration=args.duration, requests_per_client=args.requests,
                       min_tokens=args.min_tokens, max_tokens=args.max_tokens, model=args.model,
                       server_pid=proc.pid if proc else None)  # fmt: skip
        out["load"] = summarize(run)
        out["load"]["metrics_after"] = {k: v for k, v in run.metrics_after.items() if k != "judge"}
        first_errors = [f"{r.kind} {r.status}: {r.error[:200]}" for r in run.results if not r.ok][:5]
        if first_errors:
            out["load"]["first_errors"] = first_errors
        if args.bad:
            out["bad"] = run_bad(base, args.model)
            res = request(base, "chat", payload_for("chat", 0, 8, args.model))
            out["after_bad"] = {"status": res.status, "error": res.error[:300]}
            out["rss_after_bad_mib"] = round(tree_rss(proc.pid) / 2**20, 1) if proc else None
        if args.sigterm and proc is not None:
            s = run_sigterm(base, proc, model=args.model)
            out["sigterm"] = {
                "statuses": [r.status for r in s["results"]],
                "errors": [r.error[:200] for r in s["results"] if not r.ok],
                "late_request": {"status": s["late"].status, "error": s["late"].error[:200]},
                "returncode": s["returncode"],
                "exit_s": round(s["exit_s"], 1),
            }
    finally:
        if proc is not None:
            out["final_returncode"] = stop_server(proc)
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
