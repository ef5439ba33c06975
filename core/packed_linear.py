"""Linear layers whose weights are reordered once for oneDNN (bfloat16 on CPU).

On a CPU, ``F.linear`` in bfloat16 hands the weight to oneDNN, which reorders it into its
blocked layout *on every call*: for a 1-token decoding step or a (k+1)-token verify that
reorder costs about as much as the matrix product itself. :func:`pack_linears_` replaces
every ``nn.Linear`` of a loaded model with a :class:`PackedLinear` that holds the weight
reordered once (``torch.ops.mkldnn._reorder_linear_weight``) and calls oneDNN's linear on it
(``torch.ops.mkldnn._linear_pointwise``), the same ops ``torch.compile`` emits for a frozen
CPU model. Measured on the Qwen2.5-1.5B target (docs/engine.md, "Packed linears"): a whole
1-token pass 2.0x and a 6-token pass 2.3x faster, with **bit-identical** outputs.

Limits:

- CPU, bfloat16 weights, and only where oneDNN supports bfloat16 on this CPU
  (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``); elsewhere nothing is replaced.
- Packing is kept only where it computes exactly what ``F.linear`` does: each distinct weight
  shape is probed once with 1, 6 and 64 rows, and a shape whose outputs differ in any bit keeps
  ``F.linear`` (so decoded rows stay reproducible, and lossless invariants are untouched).
- The packed tensor has an opaque layout (``torch._mkldnn``): :meth:`PackedLinear.unpacked_weight`
  gives the plain ``[out, in]`` weight back (exactly). ``state_dict()`` (and so ``save_pretrained``)
  holds the plain ``weight``, loading one repacks it, and ``copy.deepcopy`` works: a packed
  model saves and copies like the original. Code that reads ``module.weight`` of a linear layer
  directly must use :meth:`PackedLinear.unpacked_weight` instead.
- Memory: a linear's float weight is released once packed, except where another module shares it
  (a ``lm_head`` tied to the input embedding keeps the embedding: one more copy of that matrix,
  e.g. 467 MB for Qwen2.5-1.5B in bfloat16).
- ``torch.ops.mkldnn`` ops are private PyTorch API (tested against torch 2.13); an error while
  packing stops there: the layers packed so far stay packed (they compute the same), the rest
  stay ``nn.Linear``.
- CPU only: do not move a packed model to another device (``.to("cuda")``); load it there instead.
- Inference only: there is no backward.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PackedLinear", "can_pack", "pack_linears_", "is_packed"]

#: rows of the probes that must match ``F.linear`` bit for bit before a weight shape is packed
PROBE_ROWS = (1, 6, 64)


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward on a weight reordered once for oneDNN (see the module docstring)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features = int(linear.in_features)
        self.out_features = int(linear.out_features)
        weight = linear.weight.detach()
        self.dtype = weight.dtype
        # not persistent: state_dict() holds the plain weight instead (_save_to_state_dict)
        self.register_buffer(
            "packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight), persistent=False
        )
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.dtype != self.dtype:
            x2 = x2.to(self.dtype)
        y = torch.ops.mkldnn._linear_pointwise(x2, self.packed_weight, self.bias, "none", [], "")
        return y.reshape(*lead, self.out_features)

    def unpacked_weight(self) -> torch.Tensor:
        """The ``[out, in]`` weight as a plain tensor (a copy, exact)."""
        return self.packed_weight.to_dense()

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: ANN001 - torch's signature
        destination[prefix + "weight"] = self.unpacked_weight()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):  # noqa: ANN001, E501
        key = prefix + "weight"
        if key in state_dict:
            weight = state_dict[key].to(self.dtype)
            if tuple(weight.shape) != (self.out_features, self.in_features):
                error_msgs.append(
                    f"{key}: shape {tuple(weight.shape)}, expected {(self.out_features, self.in_features)}"
                )
            else:
                self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous())
        elif strict:
            missing_keys.append(key)
        if self.bias is not None:
            bkey = prefix + "bias"
            if bkey in state_dict:
                self.bias.copy_(state_dict[bkey])
            elif strict:
                missing_keys.append(bkey)

    def __deepcopy__(self, memo: dict) -> PackedLinear:
        # an opaque tensor has no storage to deep-copy: seed the memo with a clone, copy the rest as usual
        memo[id(self.packed_weight)] = self.packed_weight.clone()
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, packed"


def can_pack(dtype: torch.dtype, device: torch.device | str) -> bool:
    """Whether :func:`pack_linears_` would pack a model of ``dtype`` on ``device`` (before probing shapes)."""
    if torch.device(device).type != "cpu" or dtype != torch.bfloat16:
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _same_as_f_linear(linear: nn.Linear, packed: PackedLinear) -> bool:
    gen = torch.Generator().manual_seed(0)
    for rows in PROBE_ROWS:
        x = torch.randn(rows, linear.in_features, generator=gen).to(linear.weight.dtype)
        if not torch.equal(packed(x), F.linear(x, linear.weight, linear.bias)):
            return False
    return True


@torch.no_grad()  # not inference_mode: inference tensors would refuse load_state_dict's in-place copy
def pack_linears_(model: nn.Module) -> int:
    """Replace the ``nn.Linear`` layers of a bfloat16 CPU ``model`` by :class:`PackedLinear`, in place.

    Returns how many were replaced: 0 where :func:`can_pack` says no, or where a probe found the
    packed product differing from ``F.linear`` (that shape keeps ``F.linear``). Layers of other
    dtypes or devices (an int8 ``Int8Linear`` is not an ``nn.Linear``) are left alone.
    """
    targets = [(name, mod) for name, mod in model.named_modules() if type(mod) is nn.Linear]
    if not targets:
        return 0
    exact: dict[tuple, bool] = {}
    replaced = 0
    for name, lin in targets:
        w = lin.weight
        if not can_pack(w.dtype, w.device):
            continue
        shape = (tuple(w.shape), lin.bias is not None)
        if exact.get(shape) is False:  # probed before and found to differ: not worth reordering again
            continue
        try:
            packed = PackedLinear(lin)
        except (RuntimeError, NotImplementedError, AttributeError):
            return replaced
        if shape not in exact:
            exact[shape] = _same_as_f_linear(lin, packed)
        if not exact[shape]:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, packed)
        replaced += 1
    return replaced


def is_packed(model: nn.Module) -> bool:
    """Whether ``model`` has any :class:`PackedLinear`."""
    return any(isinstance(m, PackedLinear) for m in model.modules())
