"""One causal LM and its KV cache, fed incrementally.

:class:`ModelRunner` is the only place that calls a transformers model during
decoding. It keeps a :class:`transformers.DynamicCache` and the number of
tokens it holds; :meth:`ModelRunner.extend` feeds the tokens the cache lacks and
returns the final-layer hidden states (after the final norm), and
:meth:`ModelRunner.crop` rolls the cache back after a rejection
(``DynamicCache.crop(-n)``), so no prefix is ever recomputed.
The runner remembers which token ids its cache holds: :meth:`ModelRunner.reuse`
keeps the longest common prefix with a new sequence (automatic prefix caching
for one sequence), which is what makes mining rollouts cheap.

Limits: the model must compute ``logits = lm_head(decoder(x).last_hidden_state)``
(Llama, Qwen2, Mistral, SmolLM, Phi-3 and most decoder-only models). Models
that post-process logits (Gemma-2 soft-capping, Cohere's logit scale) are not
supported: :meth:`ModelRunner.check_logits_path` detects them. Batch size 1.
"""

from __future__ import annotations

import copy

import torch
from transformers import DynamicCache


class UnsupportedModelError(ValueError):
    """The model's logits are not ``lm_head(last_hidden_state)``."""


def model_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, torch.device]:
    """``(decoder, lm_head, device)`` of a causal LM; raises :class:`UnsupportedModelError` when it has none."""
    decoder = model.get_decoder()
    lm_head = model.get_output_embeddings()
    if decoder is None or lm_head is None:
        raise UnsupportedModelError(f"{type(model).__name__} exposes no decoder / output embeddings")
    return decoder, lm_head, next(model.parameters()).device


class ModelRunner:
    """A causal LM plus its KV cache for one sequence (batch size 1)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.decoder, self.lm_head, self.device = model_parts(model)
        self.cache: DynamicCache | None = None
        self.ids: list[int] = []  # the token ids whose keys/values the cache holds

    @property
    def length(self) -> int:
        return len(self.ids)

    def reset(self) -> None:
        self.cache = DynamicCache(config=self.model.config)
        self.ids = []

    def reuse(self, seq: list[int]) -> int:
        """Crop the cache to its longest common prefix with ``seq`` (leaving at least one token of ``seq``
        to feed) and return the number of cached tokens kept."""
        if self.cache is None:
            self.reset()
        n = 0
        limit = min(len(self.ids), len(seq) - 1)
        while n < limit and self.ids[n] == seq[n]:
            n += 1
        self.crop(n)
        return n

    @torch.inference_mode()
    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` (1-D, positions ``length ..``) and return their hidden states ``[n, H]``."""
        if self.cache is None:
            self.reset()
        out = self.decoder(input_ids=tokens.view(1, -1), past_key_values=self.cache, use_cache=True)
        self.ids.extend(tokens.tolist())
        return out.last_hidden_state[0]

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``[n, V]`` for hidden states ``[n, H]``."""
        return self.lm_head(hidden)

    def fork(self, length: int | None = None) -> ModelRunner:
        """A runner sharing the model whose cache starts as this one's first ``length`` tokens.

        No tensor is copied: the fork's layers hold views, and caches only ever
        grow by concatenation into new tensors, so neither runner disturbs the other.
        """
        other = copy.copy(self)
        if self.cache is not None:
            other.cache = copy.copy(self.cache)
            other.cache.layers = [copy.copy(layer) for layer in self.cache.layers]
        other.ids = list(self.ids)
        if length is not None:
            other.crop(length)
        return other

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` cached tokens (no-op when the cache is not longer)."""
        if length < self.length:
            assert self.cache is not None
            self.cache.crop(length - self.length)
            del self.ids[length:]

    @torch.inference_mode()
    def check_logits_path(self, probe: torch.Tensor | None = None) -> None:
        """Raise :class:`UnsupportedModelError` unless ``lm_head(decoder(x))`` equals the model's logits."""
        if probe is None:
            probe = torch.tensor([[1, 2, 3]], device=self.device)
        full = self.model(input_ids=probe.view(1, -1), use_cache=False).logits[0]
        ours = self.lm_head(self.decoder(input_ids=probe.view(1, -1), use_cache=False).last_hidden_state[0])
        if not torch.allclose(full.float(), ours.float(), atol=1e-3, rtol=1e-3):
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: logits are not lm_head(last_hidden_state); "
                "models with logit post-processing are not supported by the engine"
            )
