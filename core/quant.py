"""int8 weight-only quantization of a loaded model's linear layers (``--quant int8``).

``quantize_int8_(model)`` replaces every ``nn.Linear`` of a model in place, the ``lm_head``
included, with an :class:`Int8Linear`: the weight is stored as int8 ``[out, in]`` with one
symmetric scale per output channel (``scale = max|w_row| / 127``), activations stay in the
model's float dtype (bfloat16 by default). The matmul is ``torch._weight_int8pack_mm``, a CPU
kernel that reads int8 weights directly: on this project's 2-core AMD EPYC the 1.5B target's
1-token step is ~1.8x faster than in bfloat16, but a 9-token verify was ~0.65x (slower: the
kernel's cost grows per row) (docs/engine.md, "int8 weight-only"; ``bench/bench_quant.py``).

Limits:

- ``torch._weight_int8pack_mm`` is a private op. In torch 2.13 on CPU it accepts bfloat16,
  float16 and float32 activations with scales of the same dtype, a 2-D activation and a 2-D
  contiguous int8 weight. Where it refuses (another device, another torch version, an odd
  shape), :class:`Int8Linear` falls back to dequantizing the weight and ``F.linear``: the same
  numbers, slower, and the first refusal is remembered per module so it is not retried.
- Rows: ``torch._weight_int8pack_mm`` is a per-row kernel. Above ``Int8Linear.kernel_max_rows``
  (16) rows (prefill, batched passes) the layer runs a float GEMM on the converted int8 weight
  instead (about bf16 speed, plus the conversion), so int8 gains on decoding steps, not on prefill.
- Weights only: activations, the KV cache and the embedding stay in the model dtype.
- A tied ``lm_head`` (sharing ``embed_tokens.weight``) is untied: it gets its own int8 copy and
  the embedding is left unchanged (the input embedding is a lookup, not a matmul).
- Inference only: there is no backward.
- Lossy with respect to the float model (greedy outputs mostly, not always, identical); the
  engine's lossless invariant (``sd`` == ``ar``) still holds on the quantized model itself, since
  the draft and target are each one fixed model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["QUANT_CHOICES", "Int8Linear", "quantize_int8_", "apply_quant", "is_quantized"]

#: the values of ``--quant``; "none" leaves the model in its float dtype
QUANT_CHOICES = ("none", "int8")


class Int8Linear(nn.Module):
    """A linear layer with an int8 weight ``[out, in]`` and per-output-channel float scales.

    ``forward(x)`` = ``x @ (weight_int8 * scales[:, None]).T + bias`` for ``x`` of any leading
    dims; computed with ``torch._weight_int8pack_mm`` in ``x``'s dtype where the op accepts it
    and ``x`` has at most :attr:`kernel_max_rows` rows, else by a float GEMM on the int8 weight
    converted to the activation dtype (exact: |q| <= 127) with the output scaled per channel.
    """

    #: rows (tokens x sequences) up to which ``torch._weight_int8pack_mm`` is used: its time grows
    #: ~linearly per row (a matrix-vector kernel), so a 1-token step and a k+1-token verify gain
    #: while a prefill of hundreds of rows is several times slower than a bf16 GEMM
    kernel_max_rows: int = 16

    def __init__(
        self, weight_int8: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
    ):
        super().__init__()
        if weight_int8.dtype != torch.int8 or weight_int8.dim() != 2:
            raise ValueError("weight_int8 must be a 2-D int8 tensor [out, in]")
        self.in_features = int(weight_int8.shape[1])
        self.out_features = int(weight_int8.shape[0])
        self.dtype = dtype
        self.register_buffer("weight_int8", weight_int8.contiguous())
        self.register_buffer("scales", scales.to(dtype).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype).clone())
        self._use_kernel = True

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype | None = None) -> Int8Linear:
        """Quantize ``linear``'s weight (symmetric, per output channel); copies, never edits it."""
        w = linear.weight.detach().float()
        dtype = dtype or linear.weight.dtype
        amax = w.abs().amax(dim=1).clamp(min=1e-8)
        scales = amax / 127.0
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        return cls(q, scales, linear.bias, dtype)

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight this layer computes with: ``weight_int8 * scales[:, None]``."""
        return self.weight_int8.to(self.scales.dtype) * self.scales[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.dtype != self.dtype:
            x2 = x2.to(self.dtype)
        y = None
        if x2.shape[0] > self.kernel_max_rows:
            # many rows (prefill, batched passes): the kernel's cost grows ~linearly per row, a bf16
            # GEMM on the exactly converted int8 weight, scaled per output channel, is much cheaper
            y = F.linear(x2, self.weight_int8.to(self.dtype)) * self.scales
        elif self._use_kernel:
            try:
                y = torch._weight_int8pack_mm(x2.contiguous(), self.weight_int8, self.scales)
            except (RuntimeError, NotImplementedError, AttributeError):
                # refused here (device, dtype, torch version): dequantize from now on
                self._use_kernel = False
        if y is None:
            y = F.linear(x2, self.dequantized_weight())
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


def quantize_int8_(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every ``nn.Linear`` in ``model`` (``lm_head`` included) by an :class:`Int8Linear`, in place.

    ``dtype`` is the activation dtype (default: each linear's weight dtype). A weight shared with
    a non-linear module (the ``lm_head`` tied to ``embed_tokens``) is copied into the new int8
    buffer; the embedding stays as it was. Returns ``model``.
    """
    targets = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    for name, lin in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, Int8Linear.from_linear(lin, dtype))
    # model.config is left as it is (tie_word_embeddings included): the model fingerprint
    # (core/fingerprint.py) stays the float architecture's, so judges trained on it still load
    return model


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` has any :class:`Int8Linear`."""
    return any(isinstance(m, Int8Linear) for m in model.modules())


def apply_quant(model: nn.Module, quant: str | None) -> nn.Module:
    """Apply ``--quant`` (``"none"``/None: nothing; ``"int8"``: :func:`quantize_int8_`) to ``model``."""
    q = (quant or "none").lower()
    if q == "none":
        return model
    if q == "int8":
        return quantize_int8_(model)
    raise ValueError(f"unknown quant {quant!r}; use one of {', '.join(QUANT_CHOICES)}")
