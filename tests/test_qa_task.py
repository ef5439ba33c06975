"""The built-in ``qa`` task: registration, data, answer extraction, comparison, and `aj mine` / `aj run`.

Comparison goes through a real OpenAI-compatible HTTP server on 127.0.0.1 with
scripted replies (``tests/llmjudge_server.py``), configured the way a user does:
``AJ_QA_JUDGE=openai:<url>#<model>``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys

import pytest
from conftest import save_tiny_pair
from llmjudge_server import OpenAICompatServer, Reply

from autojudge.core.compare.llm import ComparerBackendError, normalize_answer
from autojudge.core.compare.llm.prompt import Verdict, build_messages, parse_vote
from autojudge.core.data import DatasetNotFoundError
from autojudge.core.mining.store import MinedStore
from autojudge.plugins.manager import get_task, load_plugins, plugins_info
from autojudge.plugins.qa.task import QATask, extract_qa_answer, qa_split_of


@pytest.fixture
def comparer_env(monkeypatch, tmp_path):
    """Point the qa task's comparer at a scripted server; returns a function starting one."""
    monkeypatch.setenv("AJ_LLMJUDGE_CACHE", str(tmp_path / "judge-cache.sqlite3"))
    servers = []

    def start(responder, **kw):
        server = OpenAICompatServer(responder, model="scripted-judge", **kw).start()
        servers.append(server)
        monkeypatch.setenv("AJ_QA_JUDGE", f"openai:{server.base_url}#scripted-judge")
        monkeypatch.setenv("AJ_QA_JUDGE_RETRIES", "1")
        return server

    yield start
    for s in servers:
        s.stop()


def shown(body) -> tuple[str, str, str]:
    """(question, Response A, Response B) as shown in a comparer request."""
    text = body["messages"][-1]["content"]
    q = text.split("Question:\n", 1)[1].split("\n\nResponse A:\n", 1)[0]
    a = text.split("Response A:\n", 1)[1].split("\n\nResponse B:\n", 1)[0]
    b = text.split("\n\nResponse B:\n", 1)[1].split("\n\nDo Response A", 1)[0]
    return q, a, b


def hashed_rule(body) -> str:
    """A deterministic stand-in comparing model: Yes for two thirds of the prompts, by hash."""
    text = body["messages"][-1]["content"]
    _, a, b = shown(body)
    a, b = " ".join(a.split()), " ".join(b.split())  # restated on one line each, as the prompt asks
    return f"A: {a}\nB: {b}\nSame: " + ("Yes" if hashlib.sha256(text.encode()).digest()[0] % 3 else "No")


# -- registration and data ----------------------------------------------------------------------------------


def test_qa_is_a_builtin_task_registered_through_the_hook():
    task = get_task("qa")
    assert isinstance(task, QATask)
    (info,) = [p for p in plugins_info() if p["name"] == "builtin:qa"]
    assert info["source"] == "builtin" and info["tasks"] == ["qa"] and info["hooks"] == ["register_tasks"]
    assert load_plugins().task_owner["qa"] == "builtin:qa"


def test_shipped_questions_split_in_disjoint_halves():
    task = QATask()
    train, test, everything = task.load("train"), task.load("test"), task.load("all")
    assert len(train) == len(test) == 40 and len(everything) == 80
    assert not {e.id for e in train} & {e.id for e in test}
    assert {e.id for e in everything} == {e.id for e in train} | {e.id for e in test}
    assert all(e.question.endswith("?") and e.reference for e in everything)
    assert [e.id for e in task.load("train", limit=3)] == [e.id for e in train[:3]]
    assert task.load("train") == train  # deterministic
    # every alias is a different spelling of the same answer, never a second answer to a question
    for e in everything:
        assert normalize_answer(e.reference) not in {normalize_answer(a) for a in e.meta["aliases"]}
    with pytest.raises(ValueError, match="splits"):
        task.load("validation")
    info = task.info()
    assert info["data"] == "shipped" and len(info["data_sha256"]) == 16


def test_user_jsonl_from_env(monkeypatch, tmp_path):
    rows = [
        {"question": "Q one?", "answer": "A1"},
        {"id": "x2", "question": "Q two?", "answer": 42, "split": "test"},
        {"id": "x3", "question": "Q three?", "answer": "A3", "aliases": ["a three"], "split": "train"},
    ]
    path = tmp_path / "mine.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.setenv("AJ_QA_DATA", str(path))
    task = QATask()
    everything = task.load("all")
    assert [e.id for e in everything] == ["qa-1", "x2", "x3"]
    assert everything[1].reference == "42" and everything[2].meta["aliases"] == ["a three"]
    assert everything[0].meta["split"] == qa_split_of("qa-1")
    assert {e.id for e in task.load("test")} == {"x2"} | (
        {"qa-1"} if qa_split_of("qa-1") == "test" else set()
    )
    assert task.reference_answers(everything[2]) == ["A3", "a three"]
    assert task.info()["data"] == str(path)

    for bad, msg in [
        ({"question": "", "answer": "a"}, "'question'"),
        ({"question": "q?"}, "'answer'"),
        ({"question": "q?", "answer": "a", "aliases": "b"}, "'aliases'"),
        ({"question": "q?", "answer": "a", "split": "dev"}, "'split'"),
    ]:
        (tmp_path / "bad.jsonl").write_text(
            json.dumps({"question": "ok?", "answer": "ok"}) + "\n" + json.dumps(bad) + "\n"
        )
        monkeypatch.setenv("AJ_QA_DATA", str(tmp_path / "bad.jsonl"))
        with pytest.raises(ValueError, match=rf"bad.jsonl:2: {msg}"):
            task.load("all")
    (tmp_path / "dup.jsonl").write_text('{"id": "d", "question": "q?", "answer": "a"}\n' * 2)
    monkeypatch.setenv("AJ_QA_DATA", str(tmp_path / "dup.jsonl"))
    with pytest.raises(ValueError, match="duplicate id 'd'"):
        task.load("all")
    monkeypatch.setenv("AJ_QA_DATA", str(tmp_path / "missing.jsonl"))
    with pytest.raises(DatasetNotFoundError, match="AJ_QA_DATA"):
        task.load("train")


def test_data_dir_file_is_used_when_present(monkeypatch, tmp_path):
    monkeypatch.delenv("AJ_QA_DATA", raising=False)
    (tmp_path / "qa").mkdir()
    (tmp_path / "qa" / "questions.jsonl").write_text(
        '{"id": "only", "question": "Q?", "answer": "A", "split": "train"}\n'
    )
    assert [e.id for e in QATask().load("train", data_dir=tmp_path)] == ["only"]
    assert len(QATask().load("train")) == 40  # the shared data sets have no qa/ folder: shipped questions


# -- prompt and answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, answer",
    [
        ("The capital of Canada is Ottawa.\nAnswer: Ottawa", "Ottawa"),
        ("Ottawa is the capital.\n\n**Answer:** Ottawa.", "Ottawa."),
        ("Answer: Toronto\nWait, no.\nFinal answer: Ottawa", "Ottawa"),
        ("answer:   1945  ", "1945"),
        ("It is 8 planets.", "It is 8 planets."),  # no Answer line: the whole response
        ("Answer: Ottawa\nANSWER:", "Ottawa"),  # an empty last Answer line is skipped
        ("The answer: Ottawa", "The answer: Ottawa"),  # only lines that start with the label count
        ("   \n ", None),
        ("", None),
    ],
)
def test_extract_answer(response, answer):
    assert extract_qa_answer(response) == answer
    assert QATask().extract_answer(response) == answer


def test_messages_ask_for_a_final_answer_line():
    ex = QATask().load("train", limit=1)[0]
    (msg,) = QATask().build_messages(ex)
    assert msg["role"] == "user" and msg["content"].startswith(ex.question)
    assert '"Answer: <short answer>"' in msg["content"]


# -- judging ------------------------------------------------------------------------------------------------


def test_equivalence_and_correctness_go_through_the_configured_comparer(comparer_env):
    def respond(body):
        _, a, b = shown(body)
        return f"A: {a}\nB: {b}\nSame: " + (
            "Yes" if "ottawa" in a.lower() and "ottawa" in b.lower() else "No"
        )

    server = comparer_env(respond)
    task = get_task("qa")
    ex = next(e for e in task.load("all") if e.id == "geo-canada-capital")
    assert task.info()["judge"]["spec"].endswith("#scripted-judge")
    outcomes = task.equivalent_outcomes(
        [
            ("Ottawa", "It is Ottawa, in Ontario.", ex),
            ("Ottawa", "Toronto", ex),
            ("Ottawa", "ottawa", ex),
            (None, "Ottawa", ex),
        ]
    )
    assert [o.value for o in outcomes] == [True, False, True, False] and all(o.ok for o in outcomes)
    assert (
        server.count == 4
    )  # two compared pairs, both orders; identical and missing answers need no model call
    assert {shown(b)[0] for b in server.requests} == {ex.question}
    assert task.is_correct("ottawa", ex) and server.count == 4  # the reference itself: no model call
    assert task.is_correct("The capital is Ottawa", ex) and not task.is_correct("Montreal", ex)
    assert server.count == 8 and shown(server.requests[-1])[1:] in {
        ("Montreal", "Ottawa"),
        ("Ottawa", "Montreal"),
    }
    # cached: the same checks again cost nothing
    assert task.equivalent_many([("Ottawa", "It is Ottawa, in Ontario.", ex)]) == [True] and server.count == 8


def test_comparer_failure_is_an_error_not_a_verdict(comparer_env):
    server = comparer_env(lambda body: Reply(status=500, body=b"down"))
    task = get_task("qa")
    ex = task.load("train", limit=1)[0]
    with pytest.raises(
        ComparerBackendError, match=r"(?s)task 'qa'.*AJ_QA_JUDGE.*nothing was counted as equivalent.*HTTP 500"
    ):
        task.equivalent_outcomes([("Ottawa", "Toronto", ex)])
    assert server.count == 4  # two orders x (1 try + 1 retry)


def test_changing_the_comparer_changes_the_task_info(monkeypatch):
    # `aj run` hashes task.info() into each stage's inputs: another comparer re-mines
    monkeypatch.setenv("AJ_QA_JUDGE", "local:smollm2-135m-instruct")
    a = QATask().info()
    monkeypatch.setenv("AJ_QA_JUDGE_BOTH_ORDERS", "0")
    b = QATask().info()
    monkeypatch.setenv("AJ_QA_JUDGE", "local:qwen2.5-coder-1.5b-instruct")
    c = QATask().info()
    assert a["judge"]["spec"] == "local:smollm2-135m-instruct" and a != b != c
    monkeypatch.delenv("AJ_QA_JUDGE")
    monkeypatch.delenv("AJ_QA_JUDGE_BOTH_ORDERS")
    assert QATask().info()["judge"]["spec"] == "local:qwen2.5-coder-1.5b-instruct"  # the offline default


# -- the command line ---------------------------------------------------------------------------------------


def aj(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autojudge.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def expected_equivalent(question: str, a, b) -> bool:
    """What the checker must conclude from ``hashed_rule``: shortcuts, else Yes in both orders."""
    if a is None or b is None:
        return False
    if normalize_answer(a) == normalize_answer(b):
        return True
    ab, ba = (build_messages(question, x, y) for x, y in ((a, b), (b, a)))
    return all(
        parse_vote(hashed_rule({"messages": m}), x, y, question=question) is Verdict.YES
        for m, (x, y) in ((ab, (a, b)), (ba, (b, a)))
    )


@pytest.mark.slow
def test_aj_mine_task_qa_writes_labels_decided_by_the_comparer(comparer_env, tmp_path):
    server = comparer_env(hashed_rule)
    save_tiny_pair(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "mined"
    common = ["--draft", str(tmp_path / "draft"), "--target", str(tmp_path / "target"), "--dtype", "float32",
              "--max-new-tokens", "24", "--no-progress"]  # fmt: skip
    proc = aj("mine", "--task", "qa", "--limit", "1", "--out", str(out), *common, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["labels"] > 0

    store = MinedStore(out)
    rows = store.label_rows()
    ex = QATask().load("train", limit=1)[0]
    assert rows and {r["prompt_id"] for r in rows} == {ex.id}
    for r in rows:  # every label is exactly what the comparer said
        equivalent = expected_equivalent(ex.question, r["answer_original"], r["answer_alternative"])
        assert r["label"] == (0 if equivalent else 1), r
        correct = r["answer_alternative"] is not None and expected_equivalent(
            ex.question, r["answer_alternative"], ex.reference
        )
        assert r["correct_alternative"] == correct, r
    assert server.count > 0 and {shown(b)[0] for b in server.requests} == {ex.question}
    assert json.loads((out / "meta.json").read_text())["task"] == "qa"


@pytest.mark.slow
def test_aj_mine_stops_on_a_failing_comparer_and_resumes_from_the_cache(comparer_env, tmp_path):
    save_tiny_pair(tmp_path)
    env_base = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "mined"
    common = ["mine", "--task", "qa", "--limit", "1", "--out", str(out), "--draft", str(tmp_path / "draft"),
              "--target", str(tmp_path / "target"), "--dtype", "float32", "--max-new-tokens", "24", "--no-progress"]  # fmt: skip

    down = comparer_env(lambda body: Reply(status=503, body=b"maintenance"))
    proc = aj(*common, env={**os.environ, **env_base})
    assert proc.returncode != 0
    assert "ComparerBackendError" in proc.stderr and "HTTP 503" in proc.stderr and "--resume" in proc.stderr
    assert (
        not list((out / "prompts").glob("*.json")) and MinedStore(out).label_rows() == []
    )  # no label written
    assert down.count >= 2

    up = comparer_env(
        hashed_rule
    )  # the comparer is back (on another port: the cache key does not include the URL)
    proc = aj(*common, "--resume", env={**os.environ, **env_base})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert MinedStore(out).label_rows() and up.count > 0


@pytest.mark.slow
def test_aj_run_task_qa_end_to_end(comparer_env, tmp_path):
    server = comparer_env(hashed_rule)
    save_tiny_pair(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --keep-truncated: random tiny models rarely stop, so most rollouts hit the budget
    cmd = ["run", "--task", "qa", "--draft", str(tmp_path / "draft"), "--target", str(tmp_path / "target"),
           "--dtype", "float32", "--mine-limit", "4", "--val-limit", "1", "--eval-limit", "2", "--max-new-tokens", "24",
           "--thresholds", "0.2", "--top-k", "4", "--out", str(tmp_path / "run"), "--no-progress",
           "--keep-truncated"]  # fmt: skip
    first = aj(*cmd, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "qa" and {"ar", "sd", "judge@0.2", "topk:4"} <= set(summary["modes"])
    n = server.count
    assert n > 0
    second = aj(*cmd, env=env)
    assert second.returncode == 0 and second.stderr.count("skipped") == 5
    assert server.count == n  # nothing compared again
