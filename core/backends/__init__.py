"""Decoding backends, chosen and built in one place.

* ``transformers``: :class:`~autojudge.core.engine.SpeculativeEngine`, the greedy loop over
  loaded transformers models;
* ``vllm``: :class:`~autojudge.core.backends.vllm.engine.VLLMEngine` (batched; the judge inside
  vLLM's verification, ``docs/vllm.md``), behind the one-prompt interface by
  :class:`~autojudge.core.backends.vllm.engine.PerPromptEngine`.

:func:`open_engine` returns an :class:`~autojudge.core.engine.Engine` (one prompt at a time:
``aj run`` validation and evaluation, ``aj decode``); :func:`open_vllm` returns the batched
``VLLMEngine`` itself (mining rollouts, ``aj serve``, benchmarks). Importing this package
imports neither torch nor vLLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autojudge.core.backends.vllm.engine import VLLMEngine
    from autojudge.core.engine import Engine

#: the ``--backend`` choices of ``aj decode``, ``aj mine`` and ``aj run``
BACKENDS: tuple[str, ...] = ("transformers", "vllm")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def model_spec(model: Any) -> str | Path:
    """What vLLM loads for ``model``: a spec as is, or a loaded model's local directory (else its id)."""
    if isinstance(model, (str, Path)):
        return model
    return getattr(model, "path", None) or model.id


def open_vllm(target: Any, draft: Any = None, *, k: int = 5, dtype: Any = None, **options: Any) -> VLLMEngine:
    """The batched vLLM engine for ``target`` (and ``draft``: None = target-only).

    ``target``/``draft`` are model specs (preset, directory, ``.gguf``, hub id) or loaded models
    (:class:`~autojudge.core.models.LoadedModel`: their directory, and by default their dtype);
    ``dtype=None`` with a spec is bfloat16. ``options`` go to ``VLLMEngine`` (``max_model_len``,
    ``kv_cache_gib``, ``max_num_seqs``, ...). Raises ``VLLMUnavailableError`` without vLLM.
    """
    from autojudge.core.backends.vllm.engine import VLLMEngine

    if dtype is None:
        dtype = getattr(target, "dtype", None)
    return VLLMEngine(
        model_spec(target), model_spec(draft) if draft is not None else None, k=k, dtype=dtype, **options
    )


def open_engine(
    backend: str,
    target: Any,
    draft: Any = None,
    *,
    tokenizer: Any = None,
    k: int = 5,
    dtype: Any = None,
    **vllm_options: Any,
) -> Engine:
    """The one-prompt :class:`~autojudge.core.engine.Engine` of ``backend`` (one of :data:`BACKENDS`).

    ``transformers``: ``target``/``draft`` are loaded models (``LoadedModel`` or the modules
    themselves; ``draft=None``: target-only), ``tokenizer`` defaults to the target's; ``k`` and
    ``dtype`` are unused (``k`` is chosen per call). ``vllm``: see :func:`open_vllm` (``k`` is
    fixed at start-up; a judge passed to ``generate`` reaches vLLM's workers as its description).
    """
    check_backend(backend)
    if backend == "vllm":
        from autojudge.core.backends.vllm.engine import PerPromptEngine

        return PerPromptEngine(open_vllm(target, draft, k=k, dtype=dtype, **vllm_options))
    if vllm_options:
        raise TypeError(f"options {sorted(vllm_options)} are for the vllm backend only")
    if isinstance(target, (str, Path)) or isinstance(draft, (str, Path)):
        raise TypeError(
            "the transformers backend takes loaded models (autojudge.core.models.load_pair / load_model)"
        )
    from autojudge.core.engine import SpeculativeEngine
    from autojudge.core.models import LoadedModel

    if tokenizer is None and isinstance(target, LoadedModel):
        tokenizer = target.tokenizer
    return SpeculativeEngine(
        target.model if isinstance(target, LoadedModel) else target,
        draft.model if isinstance(draft, LoadedModel) else draft,
        tokenizer,
    )


__all__ = ["BACKENDS", "check_backend", "model_spec", "open_engine", "open_vllm"]
