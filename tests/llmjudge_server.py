"""A minimal OpenAI-compatible chat-completions server on 127.0.0.1, FOR TESTS ONLY.

``vllm serve`` is not installed in CI (vLLM on CPU is a separate, heavy
dependency), so the HTTP comparer backend is tested against this stand-in. It
implements only what :class:`autojudge.core.compare.llm.OpenAIChatComparer` uses:
``POST /v1/chat/completions`` (``model``, ``messages``, ``max_tokens``,
``temperature``, ``seed``; reply ``choices[0].message.content``), ``GET
/v1/models``, bearer-token auth, and 404 for an unknown model, like vLLM.

A *responder* decides each reply: a function of the request body returning a
reply string, or a :class:`Reply` (status, raw body, delay, headers) to script
failures. :func:`model_responder` serves a real transformers chat model
(greedy, or seeded sampling), written independently of autojudge's own local
backend so the two can be compared.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """A scripted HTTP reply: ``body`` bytes are sent as they are (str content is wrapped)."""

    content: str | None = None
    status: int = 200
    body: bytes | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[dict[str, Any]], "str | Reply"]


def completion_body(model: str, content: Any) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    ).encode()


class OpenAICompatServer:
    """Serve ``responder`` on ``http://127.0.0.1:<free port>/v1``; use as a context manager."""

    def __init__(
        self, responder: Responder, *, model: str = "test-judge", api_key: str | None = None
    ) -> None:
        self.responder, self.model, self.api_key = responder, model, api_key
        self.requests: list[dict[str, Any]] = []  # bodies of chat requests, in arrival order
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                with contextlib.suppress(
                    BrokenPipeError, ConnectionResetError
                ):  # the client gave up (timeouts)
                    self.wfile.write(body)

            def _error(self, status: int, message: str) -> None:
                self._send(status, json.dumps({"error": {"message": message, "code": status}}).encode())

            def _authorized(self) -> bool:
                if server.api_key is None:
                    return True
                return self.headers.get("Authorization") == f"Bearer {server.api_key}"

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v1/models":
                    return self._error(404, f"no route {self.path}")
                if not self._authorized():
                    return self._error(401, "invalid API key")
                self._send(
                    200,
                    json.dumps(
                        {"object": "list", "data": [{"id": server.model, "object": "model"}]}
                    ).encode(),
                )

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._error(404, f"no route {self.path}")
                if not self._authorized():
                    return self._error(401, "invalid API key")
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    return self._error(400, "body is not JSON")
                if body.get("model") != server.model:
                    return self._error(404, f"The model `{body.get('model')}` does not exist.")
                with server._lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                reply = server.responder(body)
                if isinstance(reply, str):
                    reply = Reply(content=reply)
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.body if reply.body is not None else completion_body(server.model, reply.content)
                self._send(reply.status, data, reply.headers)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, daemon=True, name="openai-compat-server"
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> OpenAICompatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> OpenAICompatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def model_responder(model: Any, tokenizer: Any) -> Responder:
    """Serve a transformers chat model: chat template, then greedy (or seeded sampling) generation."""
    import torch

    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> str:
        text = tokenizer.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        temperature = float(body.get("temperature") or 0.0)
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(body.get("max_tokens") or 16),
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with lock, torch.inference_mode(), torch.random.fork_rng(devices=[]):
            if temperature > 0:
                torch.manual_seed(int(body.get("seed") or 0))
            out = model.generate(**ids, pad_token_id=pad, **kwargs)
        return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    return respond
