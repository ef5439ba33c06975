"""Packed linears (autojudge.core.packed_linear): a speed-up that must not change a single bit."""

from __future__ import annotations

import copy

import torch
from conftest import make_tiny_model
from torch import nn

from autojudge.core import packed_linear
from autojudge.core.batched import BatchedEngine
from autojudge.core.engine import SpeculativeEngine
from autojudge.core.packed_linear import PackedLinear, can_pack, is_packed, pack_linears_
from autojudge.core.quant import quantize_int8_

PACKS_HERE = can_pack(torch.bfloat16, "cpu")


def _bf16_tiny(seed: int = 0) -> nn.Module:
    return make_tiny_model("qwen2", hidden=128, layers=2, seed=seed).to(torch.bfloat16)


def test_can_pack_only_bfloat16_on_cpu():
    assert not can_pack(torch.float32, "cpu")
    assert not can_pack(torch.float16, "cpu")
    assert not can_pack(torch.bfloat16, "meta")
    assert can_pack(torch.bfloat16, "cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_packing_a_bf16_model_replaces_its_linears_and_keeps_every_logit_bit(char_tokenizer):
    model = _bf16_tiny()
    plain = copy.deepcopy(model)
    linears = sum(type(m) is nn.Linear for m in model.modules())
    n = pack_linears_(model)
    if not PACKS_HERE:  # no oneDNN bfloat16 on this CPU: nothing may change
        assert n == 0 and not is_packed(model)
        return
    # q, k, v, o, gate, up, down per layer + lm_head; a shape whose probe differs on some CPU keeps nn.Linear
    assert linears == 2 * 7 + 1 and n > 0
    assert sum(isinstance(m, PackedLinear) for m in model.modules()) == n
    assert sum(type(m) is nn.Linear for m in model.modules()) == linears - n
    ids = torch.randint(0, 40, (1, 37))
    with torch.inference_mode():
        for rows in (1, 2, 6, 17, 37):
            assert torch.equal(model(ids[:, :rows]).logits, plain(ids[:, :rows]).logits)


def test_a_packed_pair_decodes_the_same_tokens_in_every_mode_and_engine(char_tokenizer):
    target, draft = _bf16_tiny(0), _bf16_tiny(0)
    with torch.no_grad():  # a draft that agrees often but not always
        for p in draft.parameters():
            p.add_(torch.randn_like(p) * p.abs().mean() * 0.15)
    plain = [copy.deepcopy(target), copy.deepcopy(draft)]
    packed = [pack_linears_(target), pack_linears_(draft)]
    assert all(packed) == PACKS_HERE
    prompts = ["def f(x):\n    return", "x = 3 + 4 * (", "the answer is"]
    outs = []
    for tgt, drf in (plain, (target, draft)):
        one = SpeculativeEngine(tgt, drf, char_tokenizer)
        many = BatchedEngine(tgt, drf, char_tokenizer)
        kw = dict(max_new_tokens=40, eos_token_ids=())
        out = [one.generate(p, mode="ar", **kw).tokens for p in prompts]
        out += [one.generate(p, mode="sd", k=k, **kw).tokens for p in prompts for k in (1, 4)]
        out += [r.tokens for r in many.generate_batch(prompts, mode="ar", **kw)]
        out += [r.tokens for r in many.generate_batch(prompts, mode="sd", k=4, **kw)]
        outs.append(out)
    assert outs[0] == outs[1]


def test_unpacked_weight_recovers_the_original_weight():
    lin = nn.Linear(96, 48, bias=True).to(torch.bfloat16)
    if not PACKS_HERE:  # no oneDNN bfloat16 on this CPU: a module holding it stays as it was
        holder = nn.Sequential(lin)
        assert pack_linears_(holder) == 0 and holder[0] is lin
        return
    packed = PackedLinear(lin)
    assert torch.equal(packed.unpacked_weight(), lin.weight)
    x = torch.randn(5, 96).to(torch.bfloat16)
    assert torch.equal(packed(x), nn.functional.linear(x, lin.weight, lin.bias))
    assert torch.equal(packed(x.view(1, 5, 96)), packed(x).view(1, 5, 48))


def test_a_shape_whose_probe_differs_keeps_f_linear(monkeypatch):
    model = _bf16_tiny()
    monkeypatch.setattr(packed_linear, "_same_as_f_linear", lambda lin, packed: lin.out_features != 256)
    n = pack_linears_(model)
    if not PACKS_HERE:
        assert n == 0
        return
    # gate and up (128 -> 256) keep nn.Linear in both layers; the 13 others are packed
    kept = [name for name, m in model.named_modules() if type(m) is nn.Linear]
    assert sorted(kept) == sorted(f"model.layers.{i}.mlp.{p}_proj" for i in range(2) for p in ("gate", "up"))
    assert n == 15 - 4


def test_float32_and_int8_models_are_left_alone():
    fp32 = make_tiny_model("qwen2", hidden=128)
    assert pack_linears_(fp32) == 0 and not is_packed(fp32)
    int8 = quantize_int8_(_bf16_tiny())
    assert pack_linears_(int8) == 0 and not is_packed(int8)


def test_packing_releases_the_float_weights():
    model = _bf16_tiny()
    before = sum(p.numel() for p in model.parameters())
    if pack_linears_(model) == 0:
        assert sum(p.numel() for p in model.parameters()) == before
        return
    # only the embedding and the norms stay parameters; the linear weights live on as packed buffers
    after = sum(p.numel() for p in model.parameters())
    assert after == model.model.embed_tokens.weight.numel() + sum(
        p.numel() for n, p in model.named_parameters() if "norm" in n
    )
    assert after < before / 3


def test_a_packed_model_copies_saves_and_reloads_like_the_original(tmp_path):
    from transformers import AutoModelForCausalLM

    from autojudge.core.models import layer_dropped_copy

    plain = _bf16_tiny()
    model = copy.deepcopy(plain)
    pack_linears_(model)
    ids = torch.randint(0, 40, (1, 9))
    with torch.inference_mode():
        want = plain(ids).logits
        twin = copy.deepcopy(model)  # an opaque packed tensor has no storage: PackedLinear copies it itself
        assert torch.equal(twin(ids).logits, want)
        # state_dict holds plain weights under the nn.Linear names
        sd, ref = model.state_dict(), plain.state_dict()
        assert sorted(sd) == sorted(ref)
        assert all(torch.equal(sd[k], ref[k]) for k in ref)
        # save_pretrained writes the checkpoint the plain model writes (a reload is compared with a reload:
        # a model rebuilt from disk differs from one cast in memory in its rotary buffers)
        model.save_pretrained(tmp_path / "packed")
        plain.save_pretrained(tmp_path / "plain")
        back, ref_back = (
            AutoModelForCausalLM.from_pretrained(tmp_path / d, dtype=torch.bfloat16).eval()
            for d in ("packed", "plain")
        )
        assert torch.equal(back(ids).logits, ref_back(ids).logits)
        # a layer-dropped draft built from a packed model equals one built from the plain model
        assert torch.equal(
            layer_dropped_copy(model, [0])(ids).logits, layer_dropped_copy(plain, [0])(ids).logits
        )


def test_the_miners_memory_estimate_counts_packed_weights():
    from autojudge.core.mining.batched import _model_bytes

    plain = _bf16_tiny()
    model = copy.deepcopy(plain)
    pack_linears_(model)  # an opaque packed tensor has no data pointer: the estimate must not ask for one
    assert _model_bytes(model) == _model_bytes(plain)


def test_load_state_dict_repacks_outside_inference_mode():
    plain = make_tiny_model("qwen2", hidden=128, layers=2, seed=0)
    for m in plain.modules():  # biases too (Qwen2's q/k/v projections have them)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.normal_(m.bias, std=0.1)
    plain = plain.to(torch.bfloat16)
    other = _bf16_tiny(seed=5)
    pack_linears_(other)
    other.load_state_dict(plain.state_dict())  # no inference_mode here: the in-place copies must be allowed
    ids = torch.randint(0, 40, (1, 9))
    with torch.inference_mode():
        assert torch.equal(other(ids).logits, plain(ids).logits)
