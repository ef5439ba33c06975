"""LiveCodeBench's row format: private tests (base64 -> zlib -> pickle -> JSON) through a refusing unpickler."""

from __future__ import annotations

import base64
import json
import os
import pickle
import sys
import zlib
from pathlib import Path

import pytest

from autojudge.plugins.code.lcb_format import (
    LCBFormatError,
    decode_private_tests,
    encode_private_tests,
    func_name,
    parse_tests,
    restricted_loads,
)
from autojudge.plugins.code.livecodebench import LiveCodeBenchTask, read_lcb_rows

FIXTURE = Path(__file__).parent / "data" / "code" / "livecodebench" / "test.jsonl"
TESTS = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]


class Evil:
    """Unpickling an instance calls os.system: a pickle that must never be loaded."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/aj-pwned",))


def wrap(payload: bytes) -> str:
    return base64.b64encode(zlib.compress(payload)).decode("ascii")


def test_official_encoding_round_trips():
    field = encode_private_tests(TESTS)
    assert (
        json.loads(pickle.loads(zlib.decompress(base64.b64decode(field)))) == TESTS
    )  # the official decoding
    assert decode_private_tests(field) == TESTS
    assert decode_private_tests(json.dumps(TESTS)) == TESTS  # some rows hold plain JSON
    assert decode_private_tests("") == []


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(Evil()),  # REDUCE of posix.system
        pickle.dumps(os.system),  # a bare global
        pickle.dumps(
            [json.dumps(TESTS), Evil()], protocol=0
        ),  # hidden inside a list, old protocol (GLOBAL opcode)
        pickle.dumps(Path("/etc/passwd")),  # any class at all
    ],
)
def test_a_pickle_with_any_global_is_refused(payload, tmp_path):
    with pytest.raises(pickle.UnpicklingError, match="forbidden"):
        restricted_loads(payload)
    with pytest.raises(LCBFormatError, match="refused or malformed pickle"):
        decode_private_tests(wrap(payload))
    assert not Path("/tmp/aj-pwned").exists()


def test_non_string_payloads_and_garbage_are_errors():
    with pytest.raises(LCBFormatError, match="expected a JSON str"):
        decode_private_tests(wrap(pickle.dumps(TESTS)))  # a list, not the JSON string
    with pytest.raises(LCBFormatError, match="neither JSON nor base64"):
        decode_private_tests("not base64 at all!")
    with pytest.raises(LCBFormatError, match="not zlib"):
        decode_private_tests(base64.b64encode(b"plain bytes").decode())
    with pytest.raises(LCBFormatError, match="decompress to more than"):
        decode_private_tests(wrap(pickle.dumps("x" * 5000)), limit=1000)  # a zlib bomb, in small


def test_test_parsing_and_func_name():
    stdin, fn = parse_tests([TESTS[0], {"input": "[2, 7]\n9", "output": "[0, 1]", "testtype": "functional"}])
    assert stdin.testtype == "stdin" and fn.call_args() == [[2, 7], 9] and fn.expected_value() == [0, 1]
    with pytest.raises(LCBFormatError, match="malformed"):
        parse_tests([{"input": "1", "output": "2", "testtype": "interactive"}])
    assert (
        func_name('{"func_name": "twoSum"}') == "twoSum" and func_name("{}") is None and func_name("") is None
    )


def test_fixture_rows_follow_the_official_format():
    rows = read_lcb_rows(FIXTURE)
    assert len(rows) == 4
    for row in rows:
        assert set(row) == {
            "question_title",
            "question_content",
            "platform",
            "question_id",
            "contest_id",
            "contest_date",
            "starter_code",
            "difficulty",
            "public_test_cases",
            "private_test_cases",
            "metadata",
        }
        assert all(isinstance(v, str) for v in row.values())
    kinds = {
        row["question_id"]: {t["testtype"] for t in json.loads(row["public_test_cases"])} for row in rows
    }
    assert kinds == {
        "abc900_a": {"stdin"},
        "abc900_c": {"stdin"},
        "3001": {"functional"},
        "3002": {"functional"},
    }
    encoded = [r for r in rows if not r["private_test_cases"].startswith("[")]
    assert len(encoded) == 3 and all(decode_private_tests(r["private_test_cases"]) for r in encoded)


def test_fixture_loads_into_examples_and_suites():
    task = LiveCodeBenchTask(path=FIXTURE)
    every = task.load("test")
    mine, ev = task.load("mine"), task.load("eval")
    assert {e.id for e in every} == {"lcb-abc900_a", "lcb-abc900_c", "lcb-3001", "lcb-3002"}
    assert {e.id for e in mine} | {e.id for e in ev} == {e.id for e in every} and not {e.id for e in mine} & {
        e.id for e in ev
    }
    by_id = {e.id: e for e in every}
    s = task.suite(by_id["lcb-abc900_a"])
    assert [t.kind for t in s.tests] == ["stdio"] * 5 and s.tests[2].input == "1000000000 1000000000\n"
    assert s.tests[2].expected == "2000000000\n" and s.prelude.startswith("from string import *")
    f = task.suite(by_id["lcb-3001"])
    assert [t.kind for t in f.tests] == ["call"] * 4 and f.tests[0].fn_name == "twoSum"
    assert (
        f.tests[0].args == ([2, 7, 11, 15], 9)
        and f.tests[0].expected == [0, 1]
        and f.tests[0].compare == "lcb"
    )
    assert len(task.suite(by_id["lcb-abc900_c"]).tests) == 3  # plain-JSON private tests
    assert all(t.timeout == task.test_timeout for t in f.tests)
    assert (
        by_id["lcb-3001"].reference["testtype"] == "functional"
        and by_id["lcb-abc900_a"].reference["func_name"] is None
    )
    json.dumps([e.reference for e in every])  # references are JSON


def test_lcb_versions_files_and_local_directory(tmp_path, monkeypatch):
    from autojudge.plugins.code.datafiles import lcb_release_files

    assert lcb_release_files("release_v2") == ("test.jsonl", "test2.jsonl") and lcb_release_files("v3") == (
        "test3.jsonl",
    )
    with pytest.raises(ValueError, match="unknown LiveCodeBench version"):
        LiveCodeBenchTask(version="release_v99")
    # the hub layout under a data dir: livecodebench/test.jsonl is release_v1
    task = LiveCodeBenchTask(version="release_v1")
    assert len(task.load("test", data_dir=FIXTURE.parent.parent)) == 4
    assert task.info()["dataset"] == "livecodebench/release_v1"
    # a release whose files are missing, offline: a clear error
    monkeypatch.setenv("AJ_OFFLINE", "1")
    monkeypatch.setenv("AJ_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="livecodebench/test2.jsonl"):
        LiveCodeBenchTask(version="release_v2").load("test", data_dir=FIXTURE.parent.parent)
    # AJ_LCB_PATH: a directory dump
    monkeypatch.setenv("AJ_LCB_PATH", str(FIXTURE.parent))
    t = LiveCodeBenchTask()
    assert (
        t.path == str(FIXTURE.parent)
        and len(t.load("test")) == 4
        and t.dataset == "livecodebench/path:livecodebench"
    )


def test_parquet_dump(tmp_path):
    # pyarrow is in the `test` extra: this must run (an ImportError here is a broken test set-up)
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = read_lcb_rows(FIXTURE)
    p = tmp_path / "dump.parquet"
    pq.write_table(pa.Table.from_pylist(rows), p)
    assert read_lcb_rows(p) == rows
    assert len(LiveCodeBenchTask(path=p).load("test")) == 4
    assert len(LiveCodeBenchTask(path=tmp_path).load("test")) == 4  # a directory of Parquet files


def test_parquet_dump_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow...` raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    p = tmp_path / "dump.parquet"
    p.write_bytes(b"PAR1")
    with pytest.raises(LCBFormatError, match="install pyarrow"):
        read_lcb_rows(p)


def test_rows_in_another_format_are_refused(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"question_id": "1", "prompt": "..."}) + "\n")
    with pytest.raises(LCBFormatError, match="not code_generation_lite format"):
        read_lcb_rows(p)
