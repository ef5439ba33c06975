"""Shared fixtures: tiny random models built from configs, and a character-level tokenizer.

Tiny models make the decoding loop testable in milliseconds. ``tiny_pair`` gives a
target and a draft that agree often but not always (the draft is the target with
noise added to its weights), so tests exercise both acceptance and rejection.
"""

from __future__ import annotations

import copy
import os
import string
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

# One torch thread per test process, inherited by the subprocesses tests start (`aj ...`):
# pytest-xdist runs a process per core, and OpenMP threads that outnumber the cores spin-wait
# for each other (measured here: a 2-thread fp32 matmul ran at ~4 GFLOP/s beside another 2-thread job).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

# Tests read data sets from ../shared/datasets unless AJ_DATA_DIR says otherwise.
if "AJ_DATA_DIR" not in os.environ and SHARED_DATASETS.is_dir():
    os.environ["AJ_DATA_DIR"] = str(SHARED_DATASETS)

CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"
SPECIALS = ["<pad>", "<eos>"]


def make_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character (96 printable chars) plus <pad>=96 and <eos>=97."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate(CHARS)}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    fast.add_special_tokens({"pad_token": "<pad>", "eos_token": "<eos>"})
    return fast


@pytest.fixture(scope="session")
def char_tokenizer() -> PreTrainedTokenizerFast:
    return make_char_tokenizer()


def make_tiny_model(
    arch: str = "qwen2",
    *,
    vocab_size: int = len(CHARS) + len(SPECIALS),
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 2,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        raise ValueError(arch)
    # larger output weights spread the logits so float32 ties are practically impossible
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model.float().eval()


def noisy_copy(model: torch.nn.Module, scale: float, seed: int = 1) -> torch.nn.Module:
    """A draft that mostly agrees with ``model``: its weights plus Gaussian noise of relative size ``scale``."""
    torch.manual_seed(seed)
    draft = copy.deepcopy(model)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn_like(p) * p.abs().mean() * scale)
    return draft.eval()


def count_forwards(module: torch.nn.Module) -> list[int]:
    """A one-element counter of ``module``'s forward calls (the hook stays for the module's life)."""
    n = [0]
    module.register_forward_hook(lambda *_: n.__setitem__(0, n[0] + 1))
    return n


def never_accept_dd():
    """A :class:`autojudge.core.judge.Judge` that never accepts and asserts it got ``dd`` features."""
    from autojudge.core.judge import Judge

    class _NeverAcceptDD(Judge):
        name = "never-dd"
        needs_draft_hidden = True
        threshold = 0.5

        def p_important(self, feats):
            assert feats.draft_hidden is not None
            return torch.ones(feats.draft_tokens.shape[0])

    return _NeverAcceptDD()


@pytest.fixture(scope="session")
def tiny_pair():
    """(target, draft) tiny Qwen2 models with partial agreement (float32)."""
    target = make_tiny_model("qwen2", seed=0)
    draft = noisy_copy(target, 0.15, seed=1)
    return target, draft


@pytest.fixture(scope="session")
def loaded_tiny_pair(tiny_pair, char_tokenizer):
    """``tiny_pair`` as a ``ModelPair`` of ``LoadedModel`` s (float32, CPU, the char tokenizer): what mining takes."""
    from autojudge.core.models import LoadedModel, ModelPair

    target, draft = tiny_pair
    mk = lambda name, m: LoadedModel(name, m, char_tokenizer, None, torch.float32, torch.device("cpu"))  # noqa: E731
    return ModelPair(
        draft=mk("tiny-draft", draft), target=mk("tiny-target", target), tokenizer=char_tokenizer
    )


def save_tiny_pair(root: Path) -> tuple[Path, Path]:
    """Save the ``tiny_pair`` models with the char tokenizer as HF directories; returns (draft, target)."""
    tok = make_char_tokenizer()
    target = make_tiny_model("qwen2", seed=0)
    draft = noisy_copy(target, 0.15, seed=1)
    for name, m in (("target", target), ("draft", draft)):
        m.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root / "draft", root / "target"


def pytest_configure(config: pytest.Config) -> None:
    # the session's last lines say which sandbox backend ran the programs; with AJ_EXPECT_DOCKER=1
    # (CI) the session fails when it was not Docker (tests/sandbox_report.py)
    from sandbox_report import SandboxReport

    config.pluginmanager.register(SandboxReport(config), "aj-sandbox-report")
