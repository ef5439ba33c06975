"""vLLM plugins for ``vllm serve`` (and ``aj serve``, which starts ``vllm serve`` with them).

* ``vllm.general_plugins`` -> :func:`register` (vLLM calls it in every process). When the
  environment variable :data:`ENV_JUDGE` holds a judge description (the JSON of
  :meth:`autojudge.core.judge.Judge.describe`, optionally with an informational ``"spec"``)
  or the path of a JSON file holding one, it wraps the model runners' ``load_model`` so that
  each worker (every tensor-parallel rank) rebuilds the judge through the plugin registry
  (:func:`autojudge.core.backends.vllm.worker.build_judge`) and installs it right after
  loading the target and the draft, before the first request. ``aj serve`` resolves
  ``--judge`` and sets it. Without the variable it does nothing.
* ``vllm.endpoint_plugins`` -> :class:`AutojudgeEndpoint` (loaded only when named in
  ``VLLM_PLUGINS``): ``GET /autojudge/metrics`` returns the verification and judge
  counters as JSON through ``collective_rpc("judge_stats")`` (needs
  ``--worker-extension-cls`` = :data:`~autojudge.core.backends.vllm.worker.WORKER_EXTENSION`).
  vLLM's own ``/metrics`` keeps its ``vllm:spec_decode_*`` counters, judge accepts included.
  It also installs :class:`DrainGuard`: once the server shuts down (SIGTERM/SIGINT; ``aj serve``
  passes ``--shutdown-timeout`` so in-flight requests finish), a *new* POST gets ``503`` with a
  clear message instead of vLLM's ``500 cannot schedule new futures after shutdown``.
"""

# no `from __future__ import annotations` here: FastAPI must see the real `Request` annotation of the route
import functools
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_JUDGE = "AUTOJUDGE_VLLM_JUDGE"
PLUGIN_NAME = "autojudge"
METRICS_PATH = "/autojudge/metrics"
_PATCHED = "_autojudge_load_model_patched"
#: set (in the API server process) when vLLM starts shutting its engine client down
DRAINING = threading.Event()
SHUTDOWN_MESSAGE = (
    "the server is shutting down: it finishes the requests in flight and accepts no new ones; "
    "retry on another instance"
)


def judge_description_from_env() -> dict[str, Any] | None:
    """The judge description in :data:`ENV_JUDGE` (inline JSON, or a JSON file's path); None when unset."""
    raw = os.environ.get(ENV_JUDGE, "").strip()
    if not raw:
        return None
    text, where = raw, ENV_JUDGE
    if not raw.startswith("{"):
        where = f"{ENV_JUDGE} file {raw!r}"
        try:
            text = Path(raw).read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(
                f"{ENV_JUDGE} must hold a judge description (JSON) or the path of a JSON file holding one; "
                f"cannot read {raw!r} ({e})"
            ) from e
    try:
        description = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f'{where} must hold a JSON judge description ({{"kind": ..., ...}}): {e}') from e
    if not isinstance(description, dict) or "kind" not in description:
        raise ValueError(f"{where} must hold a JSON object with a 'kind' key, got {text[:200]!r}")
    return description


@functools.lru_cache(maxsize=4)
def _judge_summary(raw: str) -> dict[str, Any] | None:
    """The installed judge for ``/autojudge/metrics``: its summary (no weights) and the ``spec`` it came from."""
    description = judge_description_from_env()
    if description is None:
        return None
    from autojudge.core.backends.vllm.worker import build_judge

    summary = build_judge(description).summary()
    if "spec" in description:
        summary["spec"] = description["spec"]
    return summary


def _wrap_load_model(cls: type) -> None:
    if "load_model" not in cls.__dict__ or getattr(cls.__dict__["load_model"], _PATCHED, False):
        return
    original = cls.__dict__["load_model"]

    @functools.wraps(original)
    def load_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        description = judge_description_from_env()
        if description is not None:
            from autojudge.core.backends.vllm.sampler import install_judge_on_runner
            from autojudge.core.backends.vllm.worker import build_judge

            install_judge_on_runner(self, build_judge(description, device=str(self.device)))
            label = description.get("spec") or description["kind"]
            log.info("autojudge: judge %s installed in %s", label, type(self).__name__)
        return out

    setattr(load_model, _PATCHED, True)
    cls.load_model = load_model


def register() -> None:
    """The ``vllm.general_plugins`` entry point: install the judge of :data:`ENV_JUDGE` in every model runner."""
    if judge_description_from_env() is None:
        return
    from autojudge.core.backends.vllm import require_vllm

    require_vllm()
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    _wrap_load_model(GPUModelRunner)
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    except ImportError:  # a GPU build without the CPU runner
        return
    _wrap_load_model(CPUModelRunner)


class DrainGuard:
    """ASGI middleware: while :data:`DRAINING` is set, answer every POST with ``503`` (JSON, vLLM's error shape).

    vLLM 0.32 keeps accepting HTTP requests while it drains in-flight ones after SIGTERM, but
    its request pipeline is already shut down, so a new request fails with ``500 cannot schedule
    new futures after shutdown``. GETs (``/health``, ``/metrics``) pass through unchanged.
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("method") == "POST" and DRAINING.is_set():
            body = json.dumps(
                {"error": {"message": SHUTDOWN_MESSAGE, "type": "ServiceUnavailableError", "param": None,
                           "code": 503}}
            ).encode()  # fmt: skip
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"retry-after", b"5"), (b"connection", b"close")]  # fmt: skip
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _flag_shutdown(engine_client: Any) -> None:
    """Wrap ``engine_client.shutdown`` (on the instance) so that calling it sets :data:`DRAINING` first."""
    original = getattr(engine_client, "shutdown", None)
    if original is None or getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def shutdown(*args: Any, **kwargs: Any) -> Any:
        DRAINING.set()
        return original(*args, **kwargs)

    setattr(shutdown, _PATCHED, True)
    try:
        engine_client.shutdown = shutdown
    except AttributeError:  # a client class with slots: keep vLLM's behaviour
        log.warning(
            "autojudge: cannot watch the engine client's shutdown; new requests while draining get 500"
        )


class AutojudgeEndpoint:
    """The ``vllm.endpoint_plugins`` entry point: ``GET /autojudge/metrics`` and :class:`DrainGuard`."""

    name = PLUGIN_NAME
    required_tasks = None

    def attach_router(self, app: Any) -> None:
        from fastapi import Request
        from fastapi.responses import JSONResponse

        app.add_middleware(DrainGuard)

        @app.get(METRICS_PATH)
        async def autojudge_metrics(request: Request) -> Any:
            client = getattr(request.app.state, "autojudge_engine_client", None)
            if client is None:
                return JSONResponse({"error": "no engine"}, status_code=503)
            try:
                per_rank = await client.collective_rpc("judge_stats")
            except Exception as e:  # noqa: BLE001 - the worker extension is missing or the engine failed
                return JSONResponse(
                    {"error": f"judge_stats failed ({e}); start vLLM with --worker-extension-cls "
                              "autojudge.core.backends.vllm.worker.AutojudgeWorkerExtension"},
                    status_code=501,
                )  # fmt: skip
            stats = dict(per_rank[0])
            drafts = stats.get("num_drafts", 0)
            stats["mean_acceptance_length"] = (
                (stats.get("num_accepted_tokens", 0) + drafts) / drafts if drafts else 0.0
            )
            stats["draft_acceptance_rate"] = (
                stats.get("num_accepted_tokens", 0) / stats["num_draft_tokens"]
                if stats.get("num_draft_tokens")
                else 0.0
            )
            stats["judge"] = _judge_summary(os.environ.get(ENV_JUDGE, ""))
            return JSONResponse(stats)

    async def init_state(self, engine_client: Any, state: Any, args: Any) -> None:
        state.autojudge_engine_client = engine_client
        if engine_client is not None:
            _flag_shutdown(engine_client)
