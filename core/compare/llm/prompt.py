"""The versioned equivalence prompt and the parser that turns the comparing model's reply into a verdict.

The prompt shows a question and two responses and asks the model to write
down each response's final answer, then whether they are the same, in a fixed
three-line format ending with ``Same: Yes|No|Unsure``. Writing the two answers
first is what makes small models usable as comparers: with a one-word reply format,
Qwen2.5-Coder-1.5B-Instruct said "Yes" to "Paris" vs "Lyon"; with this format
it compared them correctly (see docs/tasks-qa.md).

:data:`PROMPT_VERSION` names the exact text of :data:`SYSTEM_PROMPT` and
:data:`USER_TEMPLATE`; it is part of every cache key, so any change to either
text must bump it (a test pins the texts' hash to the version).

:func:`parse_verdict` is forgiving about formatting and strict about meaning.
Case, markdown and quoting (``**Same:** Yes``, ``"No."``, ``` `Yes` ```) are
ignored; closed ``<think>...</think>`` blocks are dropped and an unclosed one
ends the reply. Then, in order:

1. a line starting with a label (``same``, ``verdict``, ``final verdict``,
   ``answer``, ``final answer``, ``judgement``, ``decision``, then ``:``, ``=`` or
   ``-``): the *last* such line decides, by the verdict word that starts its
   value (no verdict word there: CANNOT_TELL);
2. a reply in the three-line format (a line starting ``A:`` or ``B:``) without
   such a line was cut short: CANNOT_TELL;
3. a label inside a sentence (``... so the answer is no``): the last one decides;
4. the reply's first word, when it is a verdict word (``Yes. Both say 18.``);
5. every verdict word in the reply: one kind only -> that kind, none or a mix
   -> CANNOT_TELL.

Verdict words: yes (``yes``, ``yep``, ``yeah``; ``true`` after a label or
first), no (``no``, ``nope``; ``false`` after a label or first), cannot tell
(``unsure``, ``not sure``, ``cannot tell``, ``can't tell``, ``cannot
determine``, ``unclear``, ``uncertain``, ``unknown``, ``undetermined``, ``i
don't know``). ``not`` alone is no verdict word: ``They are not the same``
does not parse and is CANNOT_TELL.
"""

from __future__ import annotations

import hashlib
import re
from enum import Enum

__all__ = [
    "PROMPT_VERSION",
    "SYSTEM_PROMPT",
    "USER_TEMPLATE",
    "Verdict",
    "build_messages",
    "parse_verdict",
    "prompt_sha256",
]

#: bump whenever SYSTEM_PROMPT or USER_TEMPLATE changes (cache keys include it)
PROMPT_VERSION = "equiv-v1"

SYSTEM_PROMPT = (
    "You are a strict, impartial grader. You compare the final answers of two responses to the same "
    "question. You never answer the question yourself."
)

USER_TEMPLATE = """Question:
{question}

Response A:
{response_a}

Response B:
{response_b}

Do Response A and Response B give the same final answer to the question? Rules:
- Compare only the final answers, not the reasoning, wording, length or formatting.
- The same answer written differently is the same (for example "Paris" and "The capital of France is Paris."; "0.5" and "1/2").
- Answers that differ in anything the question asks for (a number, name, date, unit or amount) are different.
- If a response gives no final answer or several conflicting ones, or you cannot tell, write Unsure.

Reply in exactly this format:
A: <final answer of Response A>
B: <final answer of Response B>
Same: <Yes, No or Unsure>"""


class Verdict(str, Enum):
    """The comparing model's decision about one pair. Only YES means equivalent."""

    YES = "yes"
    NO = "no"
    CANNOT_TELL = "cannot_tell"


def prompt_sha256() -> str:
    """Hash of the prompt texts (tests pin it to :data:`PROMPT_VERSION`)."""
    return hashlib.sha256((SYSTEM_PROMPT + "\x00" + USER_TEMPLATE).encode("utf-8")).hexdigest()


def build_messages(question: str, response_a: str, response_b: str) -> list[dict[str, str]]:
    """Chat messages asking whether ``response_a`` and ``response_b`` answer ``question`` alike."""
    user = USER_TEMPLATE.format(
        question=str(question).strip(), response_a=str(response_a).strip(), response_b=str(response_b).strip()
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# -- parsing ------------------------------------------------------------------------------------------

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_OPEN_THINK_RE = re.compile(r"<think>", re.IGNORECASE)
_MARKUP_RE = re.compile(r"[*_`#>~\"“”«»\[\]{}()|]")
_UNSURE = (
    r"cannot\s+tell|can\s*not\s+tell|can'?t\s+tell|cannot\s+(?:be\s+)?determined?|can'?t\s+determine|"
    r"not\s+sure|unsure|unclear|uncertain|unknown|undetermined|i\s+don'?t\s+know"
)
_WORD = rf"(?P<w>{_UNSURE}|yes|yeah|yep|nope|no|true|false)"
_LABEL = r"(?:same|final\s+verdict|verdict|final\s+answer|answer|judge?ment|decision)"
_LABEL_LINE_RE = re.compile(rf"^{_LABEL}\s*[:=\-]\s*(?P<rest>.*)$")
_FORMAT_LINE_RE = re.compile(r"^[ab]\s*:")
_LABEL_INLINE_RE = re.compile(rf"\b{_LABEL}\s*(?:is\s*)?[:=\-]?\s*{_WORD}\b")
_LEADING_RE = re.compile(rf"^[\s\W]*{_WORD}\b")
_SCAN_RE = re.compile(rf"\b(?P<w>{_UNSURE}|yes|yeah|yep|nope|no)\b")


def _classify(word: str) -> Verdict:
    w = word.strip()
    if w in ("yes", "yeah", "yep", "true"):
        return Verdict.YES
    if w in ("no", "nope", "false"):
        return Verdict.NO
    return Verdict.CANNOT_TELL


def _clean(line: str) -> str:
    line = _MARKUP_RE.sub(" ", line.replace("’", "'").replace("‘", "'").lower())
    return re.sub(r"\s+", " ", line).strip()


def parse_verdict(reply: str | None) -> Verdict:
    """The verdict in a comparing model's reply (see the module docstring for the rules)."""
    if not isinstance(reply, str):
        return Verdict.CANNOT_TELL
    text = _THINK_RE.sub(" ", reply)
    unclosed = _OPEN_THINK_RE.search(text)
    if unclosed:  # an unfinished thought: what follows is no verdict
        text = text[: unclosed.start()]
    lines = [c for c in (_clean(line) for line in text.splitlines()) if c]
    if not lines:
        return Verdict.CANNOT_TELL
    for line in reversed(lines):
        m = _LABEL_LINE_RE.match(line)
        if m:
            lead = _LEADING_RE.match(m.group("rest"))
            return _classify(lead.group("w")) if lead else Verdict.CANNOT_TELL
    if any(_FORMAT_LINE_RE.match(line) for line in lines):
        return Verdict.CANNOT_TELL
    whole = " ".join(lines)
    labelled = list(_LABEL_INLINE_RE.finditer(whole))
    if labelled:
        return _classify(labelled[-1].group("w"))
    lead = _LEADING_RE.match(whole)
    if lead:
        return _classify(lead.group("w"))
    kinds = {_classify(m.group("w")) for m in _SCAN_RE.finditer(whole)}
    return kinds.pop() if len(kinds) == 1 else Verdict.CANNOT_TELL
