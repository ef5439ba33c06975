"""LiveCodeBench's ``code_generation_lite`` row format: test decoding and a restricted unpickler.

A row (one problem) has ``question_title, question_content, platform, question_id,
contest_id, contest_date, starter_code, difficulty, public_test_cases,
private_test_cases, metadata``. ``public_test_cases`` is a JSON string: a list of
``{"input": str, "output": str, "testtype": "stdin" | "functional"}``.
``private_test_cases`` is the same list either as plain JSON or, in the released
files, as ``base64 -> zlib -> pickle -> JSON string``. ``metadata`` is a JSON string;
functional problems carry ``{"func_name": ...}``.

The pickle layer is decoded with :class:`RestrictedUnpickler`, whose ``find_class``
refuses every global: the payload is a plain ``str``, so nothing legitimate needs one,
and a hostile file cannot make the host import or call anything. ``pickle.loads`` is
never used. Decompressed payloads are capped at :data:`MAX_DECOMPRESSED_BYTES`
(a zlib bomb raises :class:`LCBFormatError`).

Functional tests: ``input`` holds one JSON value per line (the positional arguments),
``output`` one JSON value (the expected return value), as in LiveCodeBench's
``testing_util.py``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import zlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_DECOMPRESSED_BYTES",
    "LCBFormatError",
    "LCBTest",
    "RestrictedUnpickler",
    "decode_private_tests",
    "encode_private_tests",
    "func_name",
    "parse_tests",
    "restricted_loads",
]

#: the most bytes a private-test payload may decompress to (the largest released problems are far below)
MAX_DECOMPRESSED_BYTES = 1 << 30
TEST_TYPES = ("stdin", "functional")


class LCBFormatError(ValueError):
    """A row does not follow the ``code_generation_lite`` format (or hides something in its pickle)."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global: only plain data (str, numbers, lists, dicts...) loads."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name} is forbidden in LiveCodeBench test data")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are forbidden in LiveCodeBench test data")


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (no globals, no persistent ids)."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def _decompress(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise LCBFormatError(f"private tests decompress to more than {limit} bytes")
    return out + d.flush()


def decode_private_tests(field: str, *, limit: int = MAX_DECOMPRESSED_BYTES) -> list[dict[str, Any]]:
    """The private tests of a row: plain JSON, or base64 -> zlib -> (restricted) pickle -> JSON."""
    if not isinstance(field, str):
        raise LCBFormatError(f"private_test_cases must be a str, got {type(field).__name__}")
    text = field.strip()
    if not text:
        return []
    if text[0] == "[":
        try:
            return _check_list(json.loads(text))
        except json.JSONDecodeError:
            pass  # base64 never starts with "[", but be lenient about odd rows
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise LCBFormatError(f"private_test_cases is neither JSON nor base64: {e}") from None
    try:
        payload = restricted_loads(_decompress(raw, limit))
    except zlib.error as e:
        raise LCBFormatError(f"private_test_cases is not zlib data: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        if isinstance(e, LCBFormatError):
            raise
        raise LCBFormatError(f"private_test_cases holds a refused or malformed pickle: {e}") from None
    if not isinstance(payload, str):
        raise LCBFormatError(f"private_test_cases unpickles to {type(payload).__name__}, expected a JSON str")
    try:
        return _check_list(json.loads(payload))
    except json.JSONDecodeError as e:
        raise LCBFormatError(f"private_test_cases is not JSON inside its pickle: {e}") from None


def encode_private_tests(tests: list[dict[str, Any]]) -> str:
    """The official encoding of ``tests``: JSON -> pickle -> zlib -> base64 (for fixtures and round trips)."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests), protocol=4))).decode("ascii")


def _check_list(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise LCBFormatError("test cases must be a JSON list of objects")
    return value


@dataclass(frozen=True)
class LCBTest:
    """One LiveCodeBench test: stdin text / stdout text, or JSON-lines arguments / a JSON return value."""

    input: str
    output: str
    testtype: str

    def call_args(self) -> list[Any]:
        """Positional arguments of a functional test (one JSON value per input line)."""
        return [json.loads(line) for line in self.input.split("\n") if line.strip()]

    def expected_value(self) -> Any:
        """The expected return value of a functional test."""
        return json.loads(self.output)


def parse_tests(raw: list[dict[str, Any]]) -> list[LCBTest]:
    """Check and convert decoded test dicts."""
    out = []
    for i, t in enumerate(raw):
        inp, outp, kind = t.get("input"), t.get("output"), t.get("testtype")
        if not isinstance(inp, str) or not isinstance(outp, str) or kind not in TEST_TYPES:
            raise LCBFormatError(
                f"test {i} is malformed: needs str input/output and testtype in {TEST_TYPES}"
            )
        out.append(LCBTest(inp, outp, kind))
    return out


def func_name(metadata: str | dict[str, Any] | None) -> str | None:
    """``metadata["func_name"]`` of a row (the field is a JSON string in the released files)."""
    if metadata is None or metadata == "":
        return None
    meta = json.loads(metadata) if isinstance(metadata, str) else metadata
    if not isinstance(meta, dict):
        raise LCBFormatError("metadata must be a JSON object")
    name = meta.get("func_name")
    return name if isinstance(name, str) and name else None
