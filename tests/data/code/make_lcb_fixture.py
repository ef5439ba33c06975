"""Writes ``livecodebench/test.jsonl``: small problems in the exact ``code_generation_lite`` row format.

Run from this folder (``python make_lcb_fixture.py``); the output is committed. Private tests are
encoded the official way (JSON -> pickle -> zlib -> base64), except in ``abc900_c``, whose private
tests are plain JSON (some rows of the released files are). Reference solutions, used by the
tests, go to ``livecodebench/solutions.json``.
"""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path


def encode(tests: list[dict]) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode("ascii")


def stdin(i: str, o: str) -> dict:
    return {"input": i, "output": o, "testtype": "stdin"}


def functional(i: str, o: str) -> dict:
    return {"input": i, "output": o, "testtype": "functional"}


PROBLEMS = [
    {
        "question_title": "Sum of Two Integers",
        "question_content": "You are given two integers A and B on one line. Print A + B.\n\nInput\n\nA B\n\n"
        "Output\n\nPrint the answer.\n\nSample Input 1\n\n3 5\n\nSample Output 1\n\n8",
        "platform": "atcoder",
        "question_id": "abc900_a",
        "contest_id": "abc900",
        "contest_date": "2024-08-03T00:00:00",
        "starter_code": "",
        "difficulty": "easy",
        "public": [stdin("3 5\n", "8\n"), stdin("-2 2\n", "0\n")],
        "private": [
            stdin("1000000000 1000000000\n", "2000000000\n"),
            stdin("0 0\n", "0\n"),
            stdin("7 -9\n", "-2\n"),
        ],
        "metadata": {},
        "solution": "a, b = map(int, input().split())\nprint(a + b)\n",
    },
    {
        "question_title": "Squares",
        "question_content": "Given N, print the squares 1, 4, ..., N^2, one per line.\n\nInput\n\nN\n\n"
        "Output\n\nN lines.\n\nSample Input 1\n\n3\n\nSample Output 1\n\n1\n4\n9",
        "platform": "atcoder",
        "question_id": "abc900_c",
        "contest_id": "abc900",
        "contest_date": "2024-08-03T00:00:00",
        "starter_code": "",
        "difficulty": "medium",
        "public": [stdin("3\n", "1\n4\n9\n")],
        "private": [stdin("1\n", "1\n"), stdin("5\n", "1\n4\n9\n16\n25\n")],
        "private_plain_json": True,
        "metadata": {},
        "solution": "n = int(input())\nfor i in range(1, n + 1):\n    print(i * i)\n",
    },
    {
        "question_title": "two-sum",
        "question_content": "Given an array of integers nums and an integer target, return indices of the two "
        "numbers such that they add up to target.\n\nExample 1:\n\nInput: nums = [2,7,11,15], "
        "target = 9\nOutput: [0,1]",
        "platform": "leetcode",
        "question_id": "3001",
        "contest_id": "weekly-contest-400",
        "contest_date": "2024-06-02T00:00:00",
        "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
        "difficulty": "easy",
        "public": [functional("[2, 7, 11, 15]\n9", "[0, 1]"), functional("[3, 2, 4]\n6", "[1, 2]")],
        "private": [functional("[3, 3]\n6", "[0, 1]"), functional("[1, 5, 9, 13]\n22", "[2, 3]")],
        "metadata": {"func_name": "twoSum"},
        "solution": "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
        "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
        "                return [seen[target - x], i]\n            seen[x] = i\n",
    },
    {
        "question_title": "count-vowels",
        "question_content": "Given a string s, return the number of vowels (a, e, i, o, u) in s.\n\nExample 1:\n\n"
        'Input: s = "leetcode"\nOutput: 4',
        "platform": "leetcode",
        "question_id": "3002",
        "contest_id": "weekly-contest-400",
        "contest_date": "2024-06-02T00:00:00",
        "starter_code": "class Solution:\n    def countVowels(self, s: str) -> int:\n        ",
        "difficulty": "easy",
        "public": [functional('"leetcode"', "4")],
        "private": [functional('"xyz"', "0"), functional('"aeiou"', "5"), functional('"banana"', "3")],
        "metadata": {"func_name": "countVowels"},
        "solution": "class Solution:\n    def countVowels(self, s):\n        return sum(c in 'aeiou' for c in s)\n",
    },
]


def row(p: dict) -> dict:
    private = json.dumps(p["private"]) if p.get("private_plain_json") else encode(p["private"])
    return {
        "question_title": p["question_title"],
        "question_content": p["question_content"],
        "platform": p["platform"],
        "question_id": p["question_id"],
        "contest_id": p["contest_id"],
        "contest_date": p["contest_date"],
        "starter_code": p["starter_code"],
        "difficulty": p["difficulty"],
        "public_test_cases": json.dumps(p["public"]),
        "private_test_cases": private,
        "metadata": json.dumps(p["metadata"]),
    }


if __name__ == "__main__":
    out = Path(__file__).parent / "livecodebench"
    out.mkdir(exist_ok=True)
    with open(out / "test.jsonl", "w", encoding="utf-8") as f:
        for p in PROBLEMS:
            f.write(json.dumps(row(p)) + "\n")
    (out / "solutions.json").write_text(
        json.dumps({p["question_id"]: p["solution"] for p in PROBLEMS}, indent=1) + "\n", encoding="utf-8"
    )
