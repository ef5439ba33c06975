"""int8 weight-only quantization (core/quant.py, ``--quant int8``) on tiny random Qwen2 models."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import make_char_tokenizer, make_tiny_model, noisy_copy, save_tiny_pair
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from autojudge.cli.main import build_cli
from autojudge.core.engine import SpeculativeEngine
from autojudge.core.quant import Int8Linear, apply_quant, is_quantized, quantize_int8_


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [3, 40])  # the kernel (<= kernel_max_rows) and the many-rows GEMM
def test_int8_linear_matches_the_dequantized_float_linear(dtype, bias, rows):
    torch.manual_seed(0)
    lin = nn.Linear(48, 40, bias=bias).to(dtype)
    q = Int8Linear.from_linear(lin)
    assert q.weight_int8.dtype == torch.int8 and list(q.weight_int8.shape) == [40, 48]
    x = torch.randn(2, rows, 48, dtype=dtype)  # leading dims are kept
    y = q(x)
    assert y.shape == (2, rows, 40) and y.dtype == dtype
    ref = nn.functional.linear(
        x.float(), q.dequantized_weight().float(), None if lin.bias is None else lin.bias.float()
    )
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert torch.allclose(y.float(), ref, atol=tol * ref.abs().max().item(), rtol=0)
    # and close to the original float layer: half a step per weight (plus the scales' own rounding in bf16)
    w = lin.weight.float()
    err = (q.dequantized_weight().float() - w).abs()
    slack = 1e-6 if dtype == torch.float32 else w.abs() / 64
    assert (err <= q.scales.float()[:, None] / 2 + slack).all()


def test_int8_linear_falls_back_to_dequantize_where_the_kernel_refuses(monkeypatch):
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    q = Int8Linear.from_linear(lin)
    x = torch.randn(5, 16)
    want = q(x)

    def refuse(*a, **k):
        raise RuntimeError("not here")

    monkeypatch.setattr(torch, "_weight_int8pack_mm", refuse)
    got = q(x)
    assert not q._use_kernel
    assert torch.allclose(got, want, atol=1e-5)


def test_quantize_replaces_every_linear_including_lm_head():
    model = make_tiny_model("qwen2", seed=0)
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert n_linear > 0
    quantize_int8_(model)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == n_linear
    assert isinstance(model.lm_head, Int8Linear) and model.get_output_embeddings() is model.lm_head
    assert is_quantized(model)
    out = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert out.shape[-1] == model.config.vocab_size and torch.isfinite(out).all()


def test_tied_lm_head_is_untied_and_the_embedding_is_unchanged():
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    model = Qwen2ForCausalLM(cfg).eval()
    emb = model.get_input_embeddings().weight
    assert model.lm_head.weight is emb  # tied
    before = emb.detach().clone()
    ids = torch.tensor([[3, 7, 11, 2]])
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    fp = model.config.to_dict()
    quantize_int8_(model)
    assert isinstance(model.lm_head, Int8Linear)
    assert model.get_input_embeddings().weight.dtype == before.dtype
    assert torch.equal(model.get_input_embeddings().weight, before)
    assert model.config.to_dict() == fp  # the fingerprint stays the float architecture's
    with torch.no_grad():
        got = model(input_ids=ids).logits
    assert torch.allclose(got, ref, atol=0.05 * ref.abs().max().item())


def test_apply_quant_choices():
    model = make_tiny_model("qwen2", seed=0)
    assert apply_quant(model, "none") is model and not is_quantized(model)
    with pytest.raises(ValueError, match="unknown quant"):
        apply_quant(model, "int4")
    apply_quant(model, "int8")
    assert is_quantized(model)


# float32 activations, as every sd == ar test: in bfloat16 the attention of a k-token verify and of
# 1-token steps round differently (with or without int8), so the invariant is exact in float32 only
@pytest.mark.parametrize("dtype", [torch.float32])
def test_engine_on_int8_models_sd_equals_ar(dtype, char_tokenizer):
    target = make_tiny_model("qwen2", seed=0)
    draft = noisy_copy(target, 0.15, seed=1)
    target, draft = target.to(dtype), draft.to(dtype)
    quantize_int8_(target)
    quantize_int8_(draft)
    eng = SpeculativeEngine(target, draft, char_tokenizer)
    for prompt in ([5, 9, 13, 2, 7], [20, 21, 22]):
        ar = eng.generate(prompt, mode="ar", max_new_tokens=24)
        sd = eng.generate(prompt, mode="sd", k=4, max_new_tokens=24)
        assert sd.tokens == ar.tokens  # the lossless invariant holds on the quantized model itself
        assert len(ar.tokens) > 0


def test_batched_engine_on_int8_models_equals_batch_1(char_tokenizer):
    from autojudge.core.batched import BatchedEngine

    target = make_tiny_model("qwen2", seed=0)
    draft = noisy_copy(target, 0.15, seed=1)
    quantize_int8_(target)
    quantize_int8_(draft)
    prompts = [[5, 9, 13, 2, 7], [20, 21, 22], [30, 31]]
    one = SpeculativeEngine(target, draft, char_tokenizer)
    many = BatchedEngine(target, draft, char_tokenizer).generate_batch(
        prompts, mode="sd", k=4, max_new_tokens=20
    )
    for p, r in zip(prompts, many, strict=True):
        assert r.tokens == one.generate(p, mode="ar", max_new_tokens=20).tokens


def test_quant_option_in_decode_help():
    res = CliRunner().invoke(build_cli(), ["decode", "--help"])
    assert res.exit_code == 0
    assert "--quant" in res.output and "int8" in res.output
    for cmd in ("mine", "run"):
        assert "--quant" in CliRunner().invoke(build_cli(), [cmd, "--help"]).output


def test_mine_records_quant_and_refuses_a_resume_with_another(tmp_path):
    draft, target = save_tiny_pair(tmp_path)
    out = tmp_path / "mined"
    base = ["mine", "--task", "toy-arith", "--draft", str(draft), "--target", str(target), "--dtype", "float32",
            "--limit", "2", "--max-new-tokens", "16", "--out", str(out), "--no-progress"]  # fmt: skip
    res = CliRunner().invoke(build_cli(), [*base, "--quant", "int8"])
    assert res.exit_code == 0, (res.output, res.exception)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["quant"] == "int8"
    res2 = CliRunner().invoke(build_cli(), [*base, "--resume"])  # --quant none
    assert res2.exit_code != 0
    msg = res2.output + str(res2.exception)
    assert "different settings" in msg and "quant" in msg
    # the same quant resumes
    res3 = CliRunner().invoke(build_cli(), [*base, "--quant", "int8", "--resume", "--limit", "3"])
    assert res3.exit_code == 0, (res3.output, res3.exception)


def test_float_meta_has_no_quant_key(tmp_path):
    from autojudge.core.mining.run import mining_meta
    from autojudge.core.mining.steps import MiningConfig
    from autojudge.core.models import LoadedModel, ModelPair
    from autojudge.plugins.toy import ToyArithmeticTask

    tok = make_char_tokenizer()
    m = make_tiny_model("qwen2", seed=0)
    mk = lambda q: LoadedModel("t", m, tok, None, torch.float32, torch.device("cpu"), quant=q)  # noqa: E731
    task = ToyArithmeticTask()
    assert "quant" not in mining_meta(
        task, "train", ModelPair(mk("none"), mk("none"), tok), MiningConfig(), None
    )
    assert (
        mining_meta(task, "train", ModelPair(mk("int8"), mk("int8"), tok), MiningConfig(), None)["quant"]
        == "int8"
    )


def test_run_models_key_has_quant_only_when_not_none(tmp_path):
    from types import SimpleNamespace

    from autojudge.core.models import LoadedModel, ModelPair
    from autojudge.core.run.pipeline import Pipeline, RunConfig

    tok = make_char_tokenizer()
    m = make_tiny_model("qwen2", seed=0)

    def key(q: str) -> dict:
        lm = LoadedModel("t", m, tok, None, torch.float32, torch.device("cpu"), quant=q)
        p = SimpleNamespace(pair=ModelPair(lm, lm, tok))
        p.dtype_name = lambda: Pipeline.dtype_name(p)
        p.quant_name = lambda: Pipeline.quant_name(p)
        return Pipeline.models_key(p)

    assert set(key("none")) == {"draft", "target", "dtype"}  # run directories from before --quant stay cached
    assert key("int8")["quant"] == "int8"
    assert {k: v for k, v in key("int8").items() if k != "quant"} == key("none")  # same fingerprints
    assert RunConfig(task="toy-arith", out=tmp_path, quant="int8").quant == "int8"
    with pytest.raises(ValueError, match="quant"):
        RunConfig(task="toy-arith", out=tmp_path, quant="int4")
    with pytest.raises(ValueError, match="backend vllm"):
        RunConfig(task="toy-arith", out=tmp_path, quant="int8", backend="vllm", features="dt")


def test_decode_with_quant_int8_gives_sd_equal_to_ar(tmp_path):
    draft, target = save_tiny_pair(tmp_path)
    base = ["decode", "--draft", str(draft), "--target", str(target), "--prompt", "12+7=", "--raw",
            "--dtype", "float32", "--quant", "int8", "--max-new-tokens", "12", "--json"]  # fmt: skip
    outs = {}
    for mode in ("ar", "sd"):
        res = CliRunner().invoke(build_cli(), [*base, "--mode", mode])
        assert res.exit_code == 0, (res.output, res.exception)
        outs[mode] = json.loads(res.stdout)["tokens"]
    assert outs["sd"] == outs["ar"] and outs["ar"]
    res = CliRunner().invoke(build_cli(), [*base, "--backend", "vllm"])
    assert res.exit_code != 0 and "--quant int8" in res.output


def test_int8_draft_with_float_target_stays_lossless(tmp_path):
    """--draft-quant int8: only the draft is quantized; sd equals the FLOAT target's greedy output."""
    draft, target = save_tiny_pair(tmp_path)
    base = ["decode", "--draft", str(draft), "--target", str(target), "--prompt", "12+7=", "--raw",
            "--dtype", "float32", "--max-new-tokens", "16", "--json"]  # fmt: skip
    ar = CliRunner().invoke(build_cli(), [*base, "--mode", "ar"])
    sd = CliRunner().invoke(build_cli(), [*base, "--mode", "sd", "--draft-quant", "int8"])
    assert ar.exit_code == 0 and sd.exit_code == 0, (ar.output, sd.output, sd.exception)
    assert json.loads(sd.stdout)["tokens"] == json.loads(ar.stdout)["tokens"]
    from autojudge.core.models import load_pair

    pair = load_pair(str(draft), str(target), dtype="float32", draft_quant="int8")
    assert is_quantized(pair.draft.model) and not is_quantized(pair.target.model)
    assert pair.draft.quant == "int8" and pair.target.quant == "none"
    both = load_pair(str(draft), str(target), dtype="float32", quant="int8", draft_quant="none")
    assert is_quantized(both.target.model) and not is_quantized(both.draft.model)
