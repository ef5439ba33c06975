"""Stable fingerprints of a model's architecture config and of a tokenizer's vocabulary.

Judge artifacts and mined data record them so that loading against other models
fails clearly. A fingerprint is the sha256 of canonical JSON; it ignores fields
that do not change the computation (dtype, paths, transformers version).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

#: The fields of a model fingerprint that identify the computation; a record's ``id`` only names it.
FINGERPRINT_KEYS: tuple[str, ...] = ("config_sha256", "vocab_sha256", "hidden_size")

_IGNORED_CONFIG_KEYS = {
    "_name_or_path",
    "_model_name_or_path",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "_commit_hash",
    "use_cache",
    "quantization_config",
    "architectures",
    "name_or_path",
    "output_hidden_states",
    "return_dict",
}


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_fingerprint(config: Any) -> str:
    """sha256 of the computation-relevant fields of a transformers config (object or dict)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    d = {k: v for k, v in d.items() if k not in _IGNORED_CONFIG_KEYS}
    return hashlib.sha256(_canonical(d).encode()).hexdigest()


def vocab_fingerprint(tokenizer: Any) -> str:
    """sha256 of the token -> id map plus special token ids of a tokenizer."""
    vocab = tokenizer.get_vocab()
    specials = {
        "eos": tokenizer.eos_token_id,
        "bos": tokenizer.bos_token_id,
        "pad": tokenizer.pad_token_id,
        "unk": tokenizer.unk_token_id,
    }
    payload = _canonical({"vocab": sorted(vocab.items(), key=lambda kv: kv[1]), "specials": specials})
    return hashlib.sha256(payload.encode()).hexdigest()


def model_fingerprint(config: Any, tokenizer: Any) -> dict[str, Any]:
    """``{"config_sha256", "vocab_sha256", "hidden_size"}`` of a loaded model, for :func:`load_judge`."""
    hidden = config.hidden_size if hasattr(config, "hidden_size") else dict(config)["hidden_size"]
    return {
        "config_sha256": config_fingerprint(config),
        "vocab_sha256": vocab_fingerprint(tokenizer),
        "hidden_size": int(hidden),
    }


def same_model(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two fingerprint records (:func:`model_fingerprint`, plus any ``id``) agree on every :data:`FINGERPRINT_KEYS` field."""
    return all(a.get(k) == b.get(k) for k in FINGERPRINT_KEYS)
