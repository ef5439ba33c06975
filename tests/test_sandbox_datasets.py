"""Real code tasks through the sandbox: HumanEval and MBPP canonical solutions pass, wrong ones fail.

The asserts are converted by ``autojudge.sandbox.asserts`` (values compared on the host). Data
come from ``AJ_DATA_DIR`` (``../shared/datasets`` in this project's workspace). The Docker runs
FAIL, never skip, when no daemon is reachable (``-k "not docker"`` deselects them).
"""

from __future__ import annotations

import gzip
import json

import pytest

from autojudge.core.data import find_data_file
from autojudge.sandbox import Limits, Program, get_sandbox
from autojudge.sandbox.asserts import parse_asserts

pytestmark = pytest.mark.integration
N = 12  # problems of each data set


def humaneval_programs(wrong: bool = False) -> list[Program]:
    path = find_data_file("humaneval/HumanEval.jsonl.gz", dataset="humaneval")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f][:N]
    out = []
    for r in rows:
        suite = parse_asserts(r["test"], r["entry_point"])
        body = "    return None\n" if wrong else r["canonical_solution"]
        out.append(Program(r["prompt"] + body, suite.tests, setup=suite.setup, id=r["task_id"]))
    return out


def mbpp_programs() -> list[Program]:
    path = find_data_file("mbpp/mbpp.jsonl", dataset="mbpp")
    with open(path, encoding="utf-8") as f:
        rows = [r for r in map(json.loads, f) if 11 <= r["task_id"] <= 510][:N]
    out = []
    for r in rows:
        suite = parse_asserts(r["test_list"])
        assert not suite.unsupported and len(suite.tests) == len(r["test_list"])
        out.append(
            Program(
                r["code"], suite.tests, setup=r["test_setup_code"] + "\n" + suite.setup, id=str(r["task_id"])
            )
        )
    return out


@pytest.mark.parametrize("backend", ["bwrap", "docker"])
def test_canonical_solutions_pass_and_wrong_ones_fail(backend):
    he, mb, bad = humaneval_programs(), mbpp_programs(), humaneval_programs(wrong=True)[:6]
    assert sum(len(p.tests) for p in he) >= 40
    with get_sandbox(backend, workers=2, limits=Limits(timeout=20)) as box:
        results = box.run_many(he + mb + bad)
    good, wrong = results[: 2 * N], results[2 * N :]
    failures = [
        (r.id, [(t.status, t.reason) for t in r.results if not t.passed][:1]) for r in good if not r.passed
    ]
    assert not failures
    assert not any(r.passed for r in wrong)
    assert {t.status for r in wrong for t in r.results} <= {"passed", "wrong_answer", "runtime_error"}
