"""Pull the final answer out of a model's math response (text in, answer text out).

Rules, first that matches wins (within a rule, the **last** occurrence counts):

1. ``\\boxed{...}`` or ``\\fbox{...}`` with balanced (nested) braces, also
   ``\\boxed 5`` without braces. An unclosed box (a truncated response) is ignored;
   when it is the only box, the answer is ``None`` (no other rule is tried).
2. ``final answer is X`` / ``final answer: X`` (case-insensitive), X up to the end of
   the line, Minerva's trailing "I hope it is correct." removed.
3. ``#### X`` (GSM8K reference style), X up to the end of the line.
4. ``the answer is X`` / ``answer: X`` (the few-shot exemplars' style).
5. The response *ends* with a number (``-1,234.5``, ``3/4``, ``2.5e3``), ignoring
   trailing punctuation, markdown and math delimiters.

The answer is returned as cleaned text (surrounding ``$``/``\\(\\)``/``\\[\\]``,
``**``, a trailing period removed); ``None`` when nothing matches or the match is
empty. Numbers are *not* normalised here (``1,000`` stays): that is the
equivalence check's job. Limits: a response that boxes several answers yields the
last box; prose answers without any of these markers yield ``None``.
"""

from __future__ import annotations

import re

__all__ = ["extract_final_answer", "find_last_boxed", "gsm8k_reference", "strip_answer"]

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE_RE = re.compile(r"\\boxed\s+([^\s{$\\][^\s$]*)")
_FINAL_RE = re.compile(r"final\s+answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_HASH_RE = re.compile(r"####\s*(.+)")
_ANSWER_RE = re.compile(r"(?:the\s+answer\s+is|\banswer\s*:)\s*:?\s*(.+)", re.IGNORECASE)
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct\.?\s*$", re.IGNORECASE)
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+|/\d+)?|-?\.\d+(?:[eE][+-]?\d+)?"
_TRAILING_NUMBER_RE = re.compile(rf"(?:^|[\s=:(\[{{$])({_NUMBER})$")
_TRAILING_JUNK = " \t\n.!,;*_$)]}\\"


def find_last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}``/``\\fbox{...}`` (or ``\\boxed X``), else ``None``."""
    best: tuple[int, str] | None = None
    for m in _BOX_RE.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            c = text[i]
            if c == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
                i += 2  # escaped brace \{ \} belongs to the content
                continue
            depth += (c == "{") - (c == "}")
            i += 1
        if depth == 0:
            best = (m.start(), text[m.end() : i - 1])
    for m in _BOX_BARE_RE.finditer(text):
        if best is None or m.start() > best[0]:
            best = (m.start(), m.group(1))
    return None if best is None else best[1]


def strip_answer(answer: str) -> str:
    """Trim whitespace, markdown bold, math delimiters and a trailing period around ``answer``."""
    s = answer.strip()
    for _ in range(3):
        before = s
        s = s.strip().strip("*").strip()
        if s.endswith("."):
            s = s[:-1].rstrip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left) : len(s) - len(right)].strip()
        if s.startswith("$") and s.count("$") == 1:
            s = s[1:].strip()  # "$18" as currency or an unbalanced delimiter
        elif s.endswith("$") and s.count("$") == 1:
            s = s[:-1].strip()
        if s == before:
            break
    return s


def _last_line_match(pattern: re.Pattern[str], text: str) -> str | None:
    found = None
    for m in pattern.finditer(text):
        found = m.group(1)
    if found is None:
        return None
    while (inner := pattern.search(found)) is not None:  # "Final Answer: The final answer is X"
        found = inner.group(1)
    found = _HOPE_RE.sub("", found.strip())
    boxed = find_last_boxed(found)
    return strip_answer(boxed if boxed is not None else found) or None


def extract_final_answer(response: str) -> str | None:
    """The final answer in ``response`` as text, or ``None`` (see the module doc for the rules)."""
    if not response or not response.strip():
        return None
    boxed = find_last_boxed(response)
    if boxed is not None:
        return strip_answer(boxed) or None
    if _BOX_RE.search(response):
        return None  # only an unclosed box: the answer was cut off, the other rules would misread it
    for pattern in (_FINAL_RE, _HASH_RE, _ANSWER_RE):
        found = _last_line_match(pattern, response)
        if found is not None:
            return found
    tail = response.rstrip(_TRAILING_JUNK)
    m = _TRAILING_NUMBER_RE.search(tail)
    return m.group(1) if m else None


def gsm8k_reference(answer_field: str) -> str:
    """The gold number of a GSM8K ``answer`` field: the text after ``####``, commas removed."""
    if "####" not in answer_field:
        raise ValueError(f"GSM8K answer has no '####' line: {answer_field[-80:]!r}")
    return answer_field.rsplit("####", 1)[1].strip().replace(",", "")
