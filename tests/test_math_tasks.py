"""The math tasks as plugins: registration, data loading and splits, prompts, and saved model outputs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from autojudge.core.compare import math as checks
from autojudge.core.compare.math_verify import fast_compare
from autojudge.core.data import DatasetNotFoundError
from autojudge.core.task import Example, validate_task
from autojudge.plugins.manager import get_task, load_plugins
from autojudge.plugins.math.datafiles import math500_half
from autojudge.plugins.math.gsm8k import GSM8K8ShotTask, GSM8KTask
from autojudge.plugins.math.math500 import Math500Task, math500_example_id
from autojudge.plugins.math.prompts import FEWSHOT_ENV, ZERO_SHOT_INSTRUCTION, fewshot_exemplars
from autojudge.plugins.math.regression import check_output_file, check_output_row, load_output_rows

OUTPUTS = Path(__file__).parent / "data" / "math_model_outputs.jsonl"
OUTPUT_ROWS = load_output_rows(OUTPUTS)


@pytest.fixture(scope="module", autouse=True)
def _close_shared_pool():
    yield
    checks.close_check_pool()


@pytest.fixture
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No data set anywhere and no network: data_dir, AJ_DATA_DIR and the cache are empty."""
    monkeypatch.setenv("AJ_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("AJ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AJ_OFFLINE", "1")
    return tmp_path / "opt"


# -- registration -----------------------------------------------------------------------------------------
def test_tasks_are_registered_by_the_builtin_math_plugin_through_the_hook() -> None:
    reg = load_plugins(reload=True)
    assert not [p for p in reg.problems if "math" in p]
    for name in ("gsm8k", "gsm8k-8shot", "math500"):
        assert reg.task_owner[name] == "builtin:math"
        validate_task(reg.tasks[name])
    assert "register_tasks" in reg.plugins["builtin:math"].hooks
    info = get_task("math500").info()
    assert info["mining_split"] == "mine" and info["eval_split"] == "eval"
    assert get_task("gsm8k-8shot").info()["fewshot"] == 8


def test_construction_is_cheap_and_tasks_pickle(no_data: Path) -> None:
    for task in (GSM8KTask(), GSM8K8ShotTask(), Math500Task()):  # no data anywhere: must not matter
        clone = pickle.loads(pickle.dumps(task))
        assert clone.name == task.name and clone.fewshot == task.fewshot


# -- data -------------------------------------------------------------------------------------------------
def test_gsm8k_splits_ids_and_references() -> None:
    task = GSM8KTask(fewshot=0)
    train = task.load("train")
    test = task.load("test", limit=5)
    assert len(train) == 7473 and len(test) == 5
    assert train[0].id == "gsm8k-train-0" and train[7472].id == "gsm8k-train-7472"
    assert test[0].id == "gsm8k-test-0" and test[0].reference == "18"
    assert len({e.id for e in train}) == len(train)
    assert all(fast_compare(e.reference, e.reference) for e in train), (
        "every GSM8K reference is a plain number"
    )
    assert task.load("train", limit=3) == train[:3]
    with pytest.raises(ValueError, match="splits"):
        task.load("validation")


def test_gsm8k_loads_from_the_path_option(tmp_path: Path, no_data: Path) -> None:
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text('{"question": "1+1?", "answer": "1+1=2\\n#### 2"}\n')
    [ex] = GSM8KTask(fewshot=0).load("test", data_dir=tmp_path)
    assert ex == Example(
        id="gsm8k-test-0", question="1+1?", reference="2", meta={"solution": "1+1=2\n#### 2"}
    )


def test_math500_halves_are_disjoint_stable_and_cover_the_test_set() -> None:
    task = Math500Task()
    mine, ev, full = task.load("mine"), task.load("eval"), task.load("test")
    assert (len(mine), len(ev), len(full)) == (261, 239, 500)
    assert {e.id for e in mine}.isdisjoint({e.id for e in ev})
    assert {e.id for e in mine} | {e.id for e in ev} == {e.id for e in full}
    assert all(math500_half(e.meta["unique_id"]) == "mine" for e in mine)
    assert full[1].id == "math500-intermediate-algebra-1994" and full[1].reference == "p - q"
    assert (
        math500_example_id("test/counting_and_probability/525.json") == "math500-counting-and-probability-525"
    )
    assert task.load("mine", limit=4) == mine[:4]


@pytest.mark.parametrize("task", [GSM8KTask(fewshot=0), Math500Task()], ids=["gsm8k", "math500"])
def test_a_missing_data_set_is_a_clear_error(task, no_data: Path) -> None:
    split = task.mining_split
    with pytest.raises(DatasetNotFoundError) as err:
        task.load(split, data_dir=no_data)
    msg = str(err.value)
    assert str(no_data) in msg and "AJ_DATA_DIR" in msg and "AJ_OFFLINE=1" in msg


# -- prompts ----------------------------------------------------------------------------------------------
def test_zero_shot_prompt_asks_for_steps_and_a_box() -> None:
    ex = Example(id="q", question="What is 2+2?  ")
    [msg] = GSM8KTask(fewshot=0).build_messages(ex)
    assert msg["role"] == "user" and msg["content"] == f"What is 2+2?\n\n{ZERO_SHOT_INSTRUCTION}"
    assert "step by step" in msg["content"] and "\\boxed{}" in msg["content"]
    assert Math500Task().build_messages(ex) == [msg]


def test_eight_shot_prompt_uses_the_wei_et_al_exemplars_as_chat_turns() -> None:
    msgs = GSM8K8ShotTask().build_messages(Example(id="q", question="What is 2+2?"))
    assert len(msgs) == 17
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 8 + ["user"]
    assert msgs[0]["content"].startswith("There are 15 trees in the grove.")
    assert msgs[1]["content"].endswith("The answer is 6.")
    assert msgs[15]["content"].endswith("The answer is 8.")
    assert msgs[-1]["content"] == "What is 2+2?"
    assert [e["answer"] for e in fewshot_exemplars()] == ["6", "5", "39", "8", "9", "29", "33", "8"]


def test_fewshot_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FEWSHOT_ENV, "8")
    assert GSM8KTask().fewshot == 8 and len(GSM8KTask().build_messages(Example(id="q", question="x"))) == 17
    assert GSM8KTask(fewshot=0).fewshot == 0  # an explicit argument wins
    monkeypatch.setenv(FEWSHOT_ENV, "9")
    with pytest.raises(ValueError, match="between 0 and 8"):
        GSM8KTask()


# -- saved model outputs ----------------------------------------------------------------------------------
def test_model_output_file_has_enough_handwritten_rows() -> None:
    handwritten = [r for r in OUTPUT_ROWS if r.get("source") == "handwritten"]
    assert len(handwritten) >= 20
    assert {r["task"] for r in OUTPUT_ROWS} >= {"gsm8k", "gsm8k-8shot", "math500"}


def test_model_output_file_has_real_qwen_rows_for_both_data_sets() -> None:
    real = [r for r in OUTPUT_ROWS if r.get("source", "handwritten") != "handwritten"]
    assert len(real) >= 20 and all("qwen2.5-coder" in r["source"] for r in real)
    assert {r["task"] for r in real} >= {"gsm8k", "math500"}
    assert {True, False} <= {r["expected_correct"] for r in real}  # right and wrong answers
    assert any(r["expected_answer"] is None for r in real)  # responses with no answer at all
    assert len({r["id"] for r in OUTPUT_ROWS}) == len(OUTPUT_ROWS)


@pytest.mark.parametrize("row", OUTPUT_ROWS, ids=[f"{r.get('source', '?')}:{r['id']}" for r in OUTPUT_ROWS])
def test_saved_model_output(row: dict) -> None:
    check = check_output_row(row)
    assert check.ok, check.explain()


def test_harness_reports_failures(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"id": "a", "task": "gsm8k", "response": "\\\\boxed{5}", "reference": "5", '
        '"expected_answer": "6", "expected_correct": true}\n'
    )
    [check] = check_output_file(path)
    assert not check.ok and check.answer_match is None and "MISMATCH" in check.explain()
    path.write_text('{"id": "b", "task": "gsm8k"}\n')
    with pytest.raises(ValueError, match="lacks"):
        load_output_rows(path)
