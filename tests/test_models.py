"""Model loading, pair compatibility and layer dropping.

Unit tests use tiny tokenizers and random models built here; tests marked
``integration`` load real presets from the default cache (converted once).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

from autojudge.core import models, presets
from autojudge.core.models import (
    IncompatibleModelsError,
    LoadedModel,
    ModelNotFoundError,
    check_pair_compatible,
    layer_dropped_copy,
    load_model,
    load_pair,
    resolve_dtype,
)

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]


def make_tokenizer(tokens: list[str] | None = None, *, eos: str = "</s>") -> PreTrainedTokenizerFast:
    tokens = tokens or SPECIALS + WORDS
    tok = Tokenizer(WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token=eos, pad_token="<pad>"
    )


def cfg(vocab_size: int = 12) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
    )


# -- compatibility ----------------------------------------------------------------------------


def test_identical_tokenizers_are_compatible():
    check_pair_compatible(make_tokenizer(), make_tokenizer(), cfg(), cfg())


def test_different_vocab_is_rejected_with_sizes_and_tokens():
    bigger = make_tokenizer(SPECIALS + WORDS + ["bird"])
    with pytest.raises(IncompatibleModelsError) as err:
        check_pair_compatible(make_tokenizer(), bigger, cfg(), cfg(13))
    msg = str(err.value)
    assert "draft has 12 tokens, target 13" in msg and "'bird'" in msg and "only in the target" in msg


def test_same_size_different_ids_is_rejected():
    swapped = SPECIALS + ["cat", "the"] + WORDS[2:]
    with pytest.raises(IncompatibleModelsError) as err:
        check_pair_compatible(make_tokenizer(), make_tokenizer(swapped), cfg(), cfg())
    msg = str(err.value)
    assert "draft has 12 tokens, target 12" in msg
    assert "'the' has id 4 in the draft but 5 in the target" in msg


def test_different_eos_is_rejected():
    with pytest.raises(IncompatibleModelsError, match=r"eos: draft 2 vs target 3"):
        check_pair_compatible(make_tokenizer(), make_tokenizer(eos="<pad>"), cfg(), cfg())


def test_is_a_value_error():
    assert issubclass(IncompatibleModelsError, ValueError)


def test_vocab_padding_allowed_when_both_cover_the_tokenizer():
    check_pair_compatible(make_tokenizer(), make_tokenizer(), cfg(16), cfg(64))


def test_vocab_padding_rejected_when_one_embedding_is_too_small():
    with pytest.raises(IncompatibleModelsError, match="does not cover all 12 tokenizer ids"):
        check_pair_compatible(make_tokenizer(), make_tokenizer(), cfg(10), cfg(64))


# -- dtype and spec resolution ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, torch.bfloat16),
        ("fp32", torch.float32),
        ("float32", torch.float32),
        ("bf16", torch.bfloat16),
        ("BFloat16", torch.bfloat16),
        ("fp16", torch.float16),
        ("float16", torch.float16),
        ("torch.float32", torch.float32),
        (torch.float16, torch.float16),
    ],
)
def test_resolve_dtype(spec, expected):
    assert resolve_dtype(spec) == expected


def test_resolve_dtype_rejects_unknown():
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int3")


def test_missing_path_lists_presets(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        load_model(str(tmp_path / "nope"))
    msg = str(err.value)
    assert presets.DEFAULT_TARGET in msg and "local Hugging Face model directory" in msg


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(str(tmp_path))


def test_non_gguf_file_is_rejected(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="not .gguf"):
        load_model(str(f))


def test_offline_hub_id_fails_clearly(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError) as err:
        load_model("some-org/some-model-that-is-not-here")
    msg = str(err.value)
    assert "offline" in msg and presets.SMOLLM2 in msg


def test_gguf_file_is_converted_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("AJ_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[Path] = []

    def fake_convert(gguf_file: Path, out_dir: Path, **kw) -> None:
        calls.append(gguf_file)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")
    first = models.dense_from_gguf(gguf, progress=False)
    second = models.resolve_spec(str(gguf), progress=False)
    assert first == second and first.name.startswith("gguf-") and len(calls) == 1
    marker = json.loads((first / presets.MARKER_FILE).read_text())
    assert marker["source"] == str(gguf.resolve()) and marker["preset"] is None
    # a directory holding exactly one GGUF resolves to the same cache
    assert models.resolve_spec(str(tmp_path), progress=False) == first
    assert len(calls) == 1


def test_gguf_reader_memoized_only_inside_conversion(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    original = gguf.GGUFReader
    with models._faster_gguf_loading():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first
        assert first.fields["general.name"].contents() == "tiny"
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is gguf.get_tensor_name_map(
            gguf.MODEL_ARCH.LLAMA, 2
        )
    assert gguf.GGUFReader is original
    assert isinstance(gguf.GGUFReader(path), original)


# -- tiny random models -----------------------------------------------------------------------


def tiny_llama(layers: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    return AutoModelForCausalLM.from_config(config).eval()


def tiny_qwen2(layers: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        use_sliding_window=True, sliding_window=64, max_window_layers=2,
    )  # fmt: skip
    return AutoModelForCausalLM.from_config(config).eval()


def _prefill_then_step(
    model: torch.nn.Module, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, DynamicCache]:
    """Logits of the last token from a cached 1-token step, and from one full forward."""
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids[:, :-1], past_key_values=cache, use_cache=True)
        step = model(input_ids=ids[:, -1:], past_key_values=cache, use_cache=True).logits[0, -1]
        full = model(input_ids=ids).logits[0, -1]
    return step, full, cache


@pytest.mark.parametrize("factory", [tiny_llama, tiny_qwen2], ids=["llama", "qwen2"])
def test_layer_dropped_copy_runs_with_dynamic_cache(factory):
    model = factory()
    ids = torch.randint(0, 100, (1, 9), generator=torch.Generator().manual_seed(1))
    small = layer_dropped_copy(model, [1, 3])

    assert len(model.model.layers) == 4 and model.config.num_hidden_layers == 4  # original untouched
    assert len(small.model.layers) == 2 and small.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in small.model.layers] == [0, 1]
    if getattr(model.config, "layer_types", None):
        assert small.config.layer_types == [model.config.layer_types[i] for i in (1, 3)]
    # the kept layers share weights' values with the original's layers 1 and 3
    for new, old in zip(small.model.layers, (model.model.layers[1], model.model.layers[3]), strict=True):
        assert torch.equal(new.mlp.up_proj.weight, old.mlp.up_proj.weight)
        assert new.mlp.up_proj.weight.data_ptr() != old.mlp.up_proj.weight.data_ptr()

    step, full, cache = _prefill_then_step(small, ids)
    assert cache.get_seq_length() == 9 and len(cache.layers) == 2
    torch.testing.assert_close(step, full, atol=1e-4, rtol=1e-4)


def test_layer_dropped_copy_keeping_all_layers_is_identical():
    model = tiny_llama()
    ids = torch.randint(0, 100, (1, 7), generator=torch.Generator().manual_seed(2))
    copy = layer_dropped_copy(model, [0, 1, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(copy(input_ids=ids).logits, model(input_ids=ids).logits)


def test_qwen2_layer_types_follow_kept_layers():
    model = tiny_qwen2()
    assert model.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    small = layer_dropped_copy(model, [0, 3])
    assert small.config.layer_types == ["full_attention", "sliding_attention"]
    assert small.config.max_window_layers == 1


@pytest.mark.parametrize("keep", [[], [2, 1], [0, 0], [0, 4], [-1]])
def test_layer_dropped_copy_rejects_bad_indices(keep):
    with pytest.raises(ValueError, match="strictly increasing"):
        layer_dropped_copy(tiny_llama(), keep)


# -- loading from a local directory -----------------------------------------------------------


def _save_tiny(directory: Path, tokens: list[str] | None = None) -> Path:
    model = tiny_llama(layers=2)
    model.config.vocab_size = 100
    model.save_pretrained(directory)
    make_tokenizer(tokens).save_pretrained(directory)
    return directory


def test_load_model_from_local_dir(tmp_path):
    d = _save_tiny(tmp_path / "tiny")
    lm = load_model(str(d), dtype="fp32")
    assert isinstance(lm, LoadedModel)
    assert lm.id == str(d) and lm.path == d and lm.dtype == torch.float32 and lm.device == torch.device("cpu")
    assert not lm.model.training
    assert all(not p.requires_grad for p in lm.model.parameters())
    assert next(lm.model.parameters()).dtype == torch.float32
    assert lm.hidden_size == 64 and lm.config is lm.model.config
    fp = lm.fingerprint()
    assert set(fp) == {"id", "config_sha256", "vocab_sha256", "hidden_size"} and fp["hidden_size"] == 64
    assert load_model(str(d)).dtype == torch.bfloat16
    # dtype does not change the fingerprint
    assert load_model(str(d), dtype="bf16").fingerprint() == fp


def test_load_pair_local_dirs(tmp_path):
    d = _save_tiny(tmp_path / "a")
    pair = load_pair(str(d), str(d), dtype="fp32")
    assert pair.tokenizer is pair.target.tokenizer
    assert pair.shared_vocab_size == 100
    assert set(pair.fingerprint()) == {"draft", "target"}


def test_load_pair_checks_before_loading_weights(tmp_path, monkeypatch):
    a = _save_tiny(tmp_path / "a")
    b = _save_tiny(tmp_path / "b", SPECIALS + list(reversed(WORDS)))

    def no_weights(*args, **kwargs):
        raise AssertionError("weights loaded before the compatibility check")

    monkeypatch.setattr(models, "_load_weights", no_weights)
    with pytest.raises(IncompatibleModelsError):
        load_pair(str(a), str(b))


# -- real models (integration) ----------------------------------------------------------------


def _greedy(lm: LoadedModel, question: str, n: int = 8) -> str:
    tok = lm.tokenizer
    enc = tok.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = lm.model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.integration
def test_smollm2_preset_loads_and_generates():
    lm = load_model(presets.SMOLLM2)
    assert presets.is_cached(presets.SMOLLM2)
    assert lm.tokenizer.chat_template and "<|im_start|>" in lm.tokenizer.chat_template
    assert lm.hidden_size == 576 and lm.dtype == torch.bfloat16
    text = _greedy(lm, "What is the capital of France?")
    assert "Paris" in text


@pytest.mark.integration
def test_smollm2_layer_dropped_draft_pairs_with_itself():
    lm = load_model(presets.SMOLLM2, dtype="fp32")
    draft = layer_dropped_copy(lm.model, list(range(0, 30, 3)))
    assert draft.config.num_hidden_layers == 10
    ids = lm.tokenizer("def add(a, b):", return_tensors="pt").input_ids
    step, full, cache = _prefill_then_step(draft, ids)
    assert len(cache.layers) == 10
    torch.testing.assert_close(step, full, atol=1e-3, rtol=1e-3)
    check_pair_compatible(lm.tokenizer, lm.tokenizer, draft.config, lm.config)


@pytest.mark.integration
@pytest.mark.slow
def test_default_qwen_pair_loads():
    pair = load_pair(presets.DEFAULT_DRAFT, presets.DEFAULT_TARGET)
    tok = pair.tokenizer
    assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643
    assert pair.draft.hidden_size == 896 and pair.target.hidden_size == 1536
    assert pair.shared_vocab_size == 151936
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    ids = tok("def fib(n):", return_tensors="pt").input_ids
    with torch.no_grad():
        d = pair.draft.model(input_ids=ids).logits[0, -1, : pair.shared_vocab_size].argmax()
        t = pair.target.model(input_ids=ids).logits[0, -1, : pair.shared_vocab_size].argmax()
    assert 0 <= int(d) < len(tok) and 0 <= int(t) < len(tok)
