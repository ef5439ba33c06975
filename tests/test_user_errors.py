"""Issue 17: a user's mistake gets one clear message, no traceback, and costs no model loading.

Every command's checks that need no model (the --judge string and artifact header, the data set's
file, the --mined directory's meta, an existing --out) run before the models load: here loading a
model fails the test. The project's own error types reach the user as `Error: ...` (exit 1)
through the top-level handler of `cli/main.py`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner
from conftest import make_char_tokenizer, make_tiny_model

from autojudge.cli import main as aj_main


@pytest.fixture(scope="module")
def cli():
    return aj_main.build_cli()


@pytest.fixture
def no_models(monkeypatch):
    """Loading a model fails the test: every check below must come first."""
    import autojudge.core.backends as backends
    import autojudge.core.models as models

    def boom(*a, **kw):
        raise AssertionError("a model was loaded before a check that needs none")

    for name in ("load_pair", "load_model"):
        monkeypatch.setattr(models, name, boom)
    monkeypatch.setattr(backends, "open_vllm", boom)


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """No data set anywhere and no network (the README's command on a fresh offline machine)."""
    monkeypatch.delenv("AJ_DATA_DIR", raising=False)
    monkeypatch.setenv("AJ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AJ_OFFLINE", "1")
    return tmp_path / "cache" / "datasets"


def invoke(cli, *args: str):
    res = CliRunner().invoke(cli, list(args))
    # a clean failure is click's SystemExit, never the error itself (which CliRunner would hold)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    return res


def corrupt_judge(tmp_path: Path) -> Path:
    path = tmp_path / "judge.safetensors"
    path.write_bytes(b"not a judge artifact at all")
    return path


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing.safetensors", "neither a baseline"),
        ("CORRUPT", "truncated or corrupt"),
        ("topk:abc", "bad judge spec 'topk:abc'"),
    ],
)
def test_decode_rejects_a_bad_judge_before_loading_models(cli, no_models, tmp_path, spec, message):
    spec = str(corrupt_judge(tmp_path)) if spec == "CORRUPT" else spec
    res = invoke(cli, "decode", "-p", "hi", "--judge", spec)
    assert res.exit_code == 2 and "Invalid value for '--judge'" in res.output and message in res.output


def test_serve_dry_run_rejects_a_corrupt_judge_before_vllm(cli, no_models, tmp_path):
    from autojudge.cli.checks import check_judge_option

    path = corrupt_judge(tmp_path)
    with pytest.raises(click.BadParameter, match="truncated or corrupt"):
        check_judge_option(str(path))
    with pytest.raises(click.BadParameter, match="baseline judges"):
        check_judge_option("topk:4", threshold=0.5)
    assert check_judge_option("topk:4") is None
    res = invoke(cli, "serve", "--judge", str(path), "--dry-run")
    assert res.exit_code == 2 and "truncated or corrupt" in res.output


def test_run_offline_without_data_fails_before_models_naming_every_path(cli, no_models, offline, tmp_path):
    out = tmp_path / "out"
    res = invoke(cli, "run", "--task", "gsm8k", "--out", str(out), "--no-progress")
    assert res.exit_code == 1 and "Error: data set 'gsm8k' not found" in res.output
    for name in ("train.jsonl.gz", "train.jsonl"):
        assert str(offline / "gsm8k" / name) + "\n" in res.output
    assert not out.exists()  # no empty --out left behind


def test_run_with_an_empty_mined_directory_or_unknown_task(cli, no_models, tmp_path):
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    res = invoke(cli, "run", "--task", "toy-arith", "--mined", str(empty), "--out", str(out))
    assert res.exit_code == 1 and "meta.json: missing" in res.output and not out.exists()
    res = invoke(cli, "run", "--task", "no-such-task", "--out", str(out))
    assert res.exit_code == 1 and "no-such-task" in res.output and not out.exists()


def test_mine_checks_split_data_and_out_before_models(cli, no_models, offline, tmp_path):
    out = tmp_path / "mined"
    res = invoke(cli, "mine", "--task", "gsm8k", "--out", str(out), "--no-progress")
    assert res.exit_code == 1 and "data set 'gsm8k' not found" in res.output and not out.exists()
    res = invoke(cli, "mine", "--task", "toy-arith", "--split", "bogus", "--out", str(out))
    assert res.exit_code == 2 and "'--split'" in res.output
    res = invoke(cli, "mine", "--task", "toy-arith", "--shard", "3/2", "--out", str(out))
    assert res.exit_code == 2 and "0 <= I < N" in res.output
    out.mkdir()
    (out / "meta.json").write_text("{}")
    res = invoke(cli, "mine", "--task", "toy-arith", "--out", str(out))
    assert res.exit_code == 1 and "--resume" in res.output


def test_train_and_mine_merge_on_a_directory_that_is_not_mined(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = invoke(cli, "train", "--data", str(empty), "--out", str(tmp_path / "j.safetensors"))
    assert res.exit_code == 1 and "meta.json" in res.output
    # MinedDataError raised by the library, turned into one line by the top-level handler
    res = invoke(cli, "mine-merge", str(empty), "--out", str(tmp_path / "m"))
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "meta.json" in res.output


def test_the_top_level_handler_keeps_tracebacks_for_real_bugs():
    from autojudge.core.run.errors import PipelineError

    group = aj_main.AjGroup()

    @group.command()
    def user():
        raise PipelineError("change --out")

    @group.command()
    def bug():
        raise RuntimeError("a bug")

    res = CliRunner().invoke(group, ["user"])
    assert res.exit_code == 1 and res.output == "Error: change --out\n"
    res = CliRunner().invoke(group, ["bug"])
    assert isinstance(res.exception, RuntimeError)


def test_a_broken_check_pool_is_one_line_in_every_command():
    """`aj run`'s mining stage and others meet it too: the pool's reason, not a traceback."""
    from autojudge.core.compare.pool import BROKEN_PREFIX, PoolBrokenError

    group = aj_main.AjGroup()

    @group.command()
    def checks():
        raise PoolBrokenError(BROKEN_PREFIX + "worker initializer failed: ModuleNotFoundError")

    res = CliRunner().invoke(group, ["checks"])
    assert res.exit_code == 1
    assert res.output == "Error: check pool is broken: worker initializer failed: ModuleNotFoundError\n"


# -- the dtype notice -------------------------------------------------------------------------------------


def _fake_from_pretrained_advising_float32(monkeypatch):
    """``from_pretrained`` as transformers' GGUF path runs it: its quantizer advises `dtype=torch.float32`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.utils.quantization_config import GgufConfig

    def from_pretrained(source, *, dtype=None, **kw):
        q = GgufHfQuantizer(GgufConfig())
        q.supported = True
        q.update_dtype(dtype)  # the real notice, from the real logger
        logging.getLogger("transformers.quantizers.quantizer_gguf").warning("another GGUF warning")
        return make_tiny_model("qwen2", seed=0).to(dtype)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **kw: make_char_tokenizer())


def test_no_dtype_advice_where_aj_chose_the_dtype(monkeypatch, capfd, caplog, tmp_path):
    """aj picks the dtype (--dtype, bfloat16 for GGUF conversion): transformers' advice to pass
    `dtype=torch.float32` is not the user's to act on; other warnings still show."""
    from autojudge.core import models

    _fake_from_pretrained_advising_float32(monkeypatch)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="chat template"):
        models.convert_gguf(gguf, tmp_path / "dense")
        models._load_weights("m", tmp_path / "dense", make_char_tokenizer(), torch.bfloat16, "cpu")
    assert "dtype=torch.float32" not in capfd.readouterr().err + caplog.text
    assert caplog.text.count("another GGUF warning") == 2  # only the advice is dropped
    assert not logging.getLogger("transformers.quantizers.quantizer_gguf").filters  # removed afterwards
