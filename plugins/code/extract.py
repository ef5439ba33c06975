"""Code extraction from a model response: the last fenced Python block, with fallbacks.

Rules, first match wins:

1. The **last closed** fenced block (```` ``` ```` or ``~~~``, three or more, at the start
   of a line, possibly indented) whose info string is empty or a Python name
   (``python``, ``py``, ``python3``, ``Python``...; anything after the first word is
   ignored). Blocks tagged with another language (``text``, ``bash``, ``cpp``...) are
   never code. Empty blocks are skipped.
2. A final **unclosed** Python/untagged block (the response was cut off at the token
   limit): its content, as it is (it usually fails to compile, which is the truth).
3. **No fence at all**: the whole response, when it parses as Python and contains a
   definition, an import or an assignment/loop/branch statement (bare prose seldom parses;
   a lone expression such as ``hello`` is not taken as code).
4. Otherwise ``None`` (no code: never equivalent, never correct).

The content is dedented (a block indented inside a list item) and stripped of leading /
trailing blank lines. Limits: when a model writes the solution and then a separate usage
example block, rule 1 takes the example (LiveCodeBench's own extractor has the same
limit); fences inside string literals of the code are not understood.
"""

from __future__ import annotations

import ast
import re
import textwrap

__all__ = ["PYTHON_TAGS", "extract_code", "fenced_blocks"]

PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3", "python2"})
_OPEN_RE = re.compile(r"^([ \t]*)(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$")
_CODE_NODES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Import,
    ast.ImportFrom,
    ast.Assign,
    ast.AugAssign,
    ast.AnnAssign,
    ast.For,
    ast.While,
    ast.If,
    ast.With,
    ast.Try,
)


def fenced_blocks(response: str) -> list[tuple[str, str, bool]]:
    """Every fenced block as ``(tag, content, closed)``, in order; ``tag`` is lower-case."""
    blocks: list[tuple[str, str, bool]] = []
    lines = response.split("\n")
    i = 0
    while i < len(lines):
        m = _OPEN_RE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, tag = m.group(2), m.group(3).lower()
        close_re = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close_re.match(lines[j]):
            j += 1
        blocks.append((tag, _clean("\n".join(lines[i + 1 : j])), j < len(lines)))
        i = j + 1
    return blocks


def _clean(code: str) -> str:
    return textwrap.dedent(code).strip("\n").rstrip()


def _looks_like_code(text: str) -> bool:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(isinstance(node, _CODE_NODES) for node in tree.body)


def extract_code(response: str | None) -> str | None:
    """The program in ``response`` (see the module doc), or ``None`` when it has none."""
    if not response or not response.strip():
        return None
    blocks = fenced_blocks(response)
    python = [(code, closed) for tag, code, closed in blocks if tag in PYTHON_TAGS and code.strip()]
    closed = [code for code, is_closed in python if is_closed]
    if closed:
        return closed[-1]
    if python and blocks and not blocks[-1][2]:
        return python[-1][0]  # cut off inside the last block
    if not blocks and _looks_like_code(response.strip("\n")):
        return _clean(response)
    return None
