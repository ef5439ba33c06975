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

:func:`parse_vote` is what the checker counts (rules :data:`VOTE_RULES`): the
verdict of :func:`parse_verdict`, but CANNOT_TELL unless the reply restates
both answers (``A:`` / ``B:`` lines) and each restatement was taken from the
response shown under its letter (:func:`restatement_matches`), and CANNOT_TELL
for a Yes between restated answers with different numbers. Small models
sometimes write the right answer in place of the one shown (``A: 6``, ``B: 6``,
``Same: Yes`` for "6" vs "8"); such a vote compared something else (issue 17).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from enum import Enum

__all__ = [
    "PROMPT_VERSION",
    "SYSTEM_PROMPT",
    "USER_TEMPLATE",
    "Verdict",
    "VOTE_RULES",
    "build_messages",
    "parse_verdict",
    "parse_vote",
    "prompt_sha256",
    "restated_answers",
    "restatement_matches",
]

#: bump whenever SYSTEM_PROMPT or USER_TEMPLATE changes (cache keys include it)
PROMPT_VERSION = "equiv-v1"

#: names how replies become votes (:func:`parse_vote`); it is not in cache keys (replies are parsed
#: again on every read) but in the comparer's described settings, so a change re-runs ``aj run`` stages
VOTE_RULES = "restated-v1"

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


# -- checking the restated answers ------------------------------------------------------------------

_RESTATED_RE = re.compile(
    r"^(?:(?:final\s+)?(?:response|answer)\s+)?(?P<which>[ab])\s*[:=\-]\s*(?P<text>.*)$"
)
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
} | {
    w: str(10 * i)
    for i, w in enumerate(["thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"], 3)
}
#: words a model adds around an answer when restating it; they need not occur in the response
_FILLER = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "is",
        "are",
        "was",
        "were",
        "it",
        "its",
        "this",
        "that",
        "in",
        "on",
        "at",
        "to",
        "and",
        "or",
        "about",
        "approximately",
        "roughly",
        "around",
        "final",
        "answer",
        "response",
    ]
)
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+")


_WORD_VALUES = {w: int(v) for w, v in _NUMBER_WORDS.items()}
_MULTIPLIERS = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
#: spellings of one unit, read as its symbol (``42.195 kilometres`` = ``42.195 km``)
_UNITS = {
    **dict.fromkeys(("kilometre", "kilometres", "kilometer", "kilometers"), "km"),
    **dict.fromkeys(("metre", "metres", "meter", "meters"), "m"),
    **dict.fromkeys(("centimetre", "centimetres", "centimeter", "centimeters"), "cm"),
    **dict.fromkeys(("millimetre", "millimetres", "millimeter", "millimeters"), "mm"),
    **dict.fromkeys(("mile", "miles"), "mi"),
    **dict.fromkeys(("kilogram", "kilograms", "kilogramme", "kilogrammes"), "kg"),
    **dict.fromkeys(("gram", "grams", "gramme", "grammes"), "g"),
    **dict.fromkeys(("pound", "pounds", "lbs"), "lb"),
    **dict.fromkeys(("foot", "feet"), "ft"),
    **dict.fromkeys(("inch", "inches"), "inch"),
    **dict.fromkeys(("second", "seconds", "sec", "secs"), "s"),
    **dict.fromkeys(("minute", "minutes", "mins"), "min"),
    **dict.fromkeys(("hour", "hours", "hr", "hrs"), "h"),
    **dict.fromkeys(("litre", "litres", "liter", "liters"), "l"),
    "celsius": "c",
    "fahrenheit": "f",
}


def _join_number_words(tokens: list[str]) -> list[str]:
    """``three hundred sixty six`` -> ``366``, ``two hundred and six`` -> ``206``, ``three million`` ->
    ``3000000`` (tokens already mapped by :data:`_NUMBER_WORDS`); digits and other words pass through."""
    out: list[str] = []
    total = current = 0
    run: list[str] = []  # the words of the number being read

    def flush() -> None:
        nonlocal total, current, run
        if run:
            out.append(str(total + current))
        total = current = 0
        run = []

    for tok in tokens:
        if tok in _WORD_VALUES:
            value = _WORD_VALUES[tok]
            last = _WORD_VALUES.get(run[-1]) if run else None
            if run and last is not None and last < 100 and (value >= 10 or last < 20 or last % 10):
                flush()  # "nineteen twelve", "six seven": two numbers, not one
            current += value
            run.append(tok)
        elif tok in _MULTIPLIERS and run:
            current = max(current, 1) * _MULTIPLIERS[tok]
            if _MULTIPLIERS[tok] >= 1000:
                total, current = total + current, 0
            run.append(tok)
        elif tok == "and" and run and run[-1] == "hundred":
            run.append(tok)
        else:
            flush()
            out.append(tok)
    flush()
    return out


def _answer_tokens(text: str) -> list[str]:
    """Tokens of an answer for :func:`restatement_matches`: accents, case, punctuation, thousands
    separators and trailing decimal zeros removed; numbers in words as digits (``six``, ``three hundred
    sixty-six``, ``three million``); spellings of common units as their symbols (``kilometres`` = ``km``)."""
    s = unicodedata.normalize("NFKD", str(text).replace("\u2019", "'").replace("\u2018", "'"))
    s = "".join(c for c in s if not unicodedata.combining(c)).casefold()
    s = re.sub(r"(?<=\d)[,\u00a0\u202f](?=\d{3}\b)", "", s)
    words = []
    for tok in _TOKEN_RE.findall(s):
        if tok[0].isdigit():
            if "." in tok:
                tok = tok.rstrip("0").rstrip(".")
            tok = tok.lstrip("0") or "0"
        words.append(tok)
    return [_UNITS.get(t, t) for t in _join_number_words(words)]


def restated_answers(reply: str | None) -> tuple[str, str] | None:
    """The ``A:`` and ``B:`` answers a reply restates (the last line of each), or ``None`` if one is missing."""
    if not isinstance(reply, str):
        return None
    text = _THINK_RE.sub(" ", reply)
    found: dict[str, str] = {}
    for line in text.splitlines():
        m = _RESTATED_RE.match(re.sub(r"[*_`#>~]", " ", line).strip().lower())
        if m:
            found[m.group("which")] = m.group("text").strip()
    if "a" not in found or "b" not in found:
        return None
    return found["a"], found["b"]


def restatement_matches(restated: str, response: str) -> bool:
    """Whether a restated answer was taken from ``response``: each of its words and numbers (filler such
    as "the" or "about" aside) occurs in the response, after :func:`_answer_tokens`' normalisation."""
    words = [t for t in _answer_tokens(restated) if t not in _FILLER]
    if not words:
        return False
    have = set(_answer_tokens(response))
    return all(t in have for t in words)


def _numbers(text: str) -> set[str]:
    return {t for t in _answer_tokens(text) if t[0].isdigit()}


def _content(text: str) -> set[str]:
    return {t for t in _answer_tokens(text) if t not in _FILLER}


#: an answer of at most this many tokens is a short (extracted) answer, checked for dropped list items
SHORT_ANSWER_TOKENS = 8
#: a list of several things: joined by "and", "&", ";", "plus", "as well as", or with two commas or more
_LIST_RE = re.compile(r"[;&]|\b(?:and|plus|as well as)\b|,.*,", re.IGNORECASE)


#: a question asking for several things (``Which two elements...``, ``In which city and country...``)
_SEVERAL_RE = re.compile(r"\b(?:and|both|two|three|four|five)\b", re.IGNORECASE)


def _drops_a_listed_item(listed: str, other: str, several: bool = False) -> bool:
    """``listed`` is a short answer naming several things (``hydrogen and oxygen``, ``red, yellow,
    blue``) and ``other`` lacks one of its words: a partial answer, whatever the model says. One comma
    is no list (``Ottawa, in Ontario``), unless the question asks for ``several`` things (``Paris,
    France`` for "In which city and country...")."""
    return (
        len(_answer_tokens(listed)) <= SHORT_ANSWER_TOKENS
        and (_LIST_RE.search(listed) is not None or (several and "," in listed))
        and not _content(listed) <= _content(other)
    )


def _drops_a_number(restated: str, response: str) -> bool:
    """A short ``response`` (``July 4, 1776``) restated without one of its numbers (``1776``)."""
    return len(_answer_tokens(response)) <= SHORT_ANSWER_TOKENS and not _numbers(response) <= _numbers(
        restated
    )


def parse_vote(reply: str | None, response_a: str, response_b: str, question: str | None = None) -> Verdict:
    """One vote: :func:`parse_verdict`, checked against the answers the reply restates.

    A Yes or No counts only when the reply restates both answers (``A:`` and ``B:``
    lines) and each restatement was taken from its own response
    (:func:`restatement_matches`); otherwise the model may have compared something
    else than it was shown (small models copy one answer into both lines, or write
    the right answer instead of the given one), and the vote is CANNOT_TELL.

    A Yes must moreover be supported by the words: it is CANNOT_TELL when the two
    restated answers contain different numbers (``A: 6``, ``B: 8``), when neither
    restated answer's words include the other's (``carbon dioxide`` / ``oxygen``,
    but also synonyms such as ``CO2`` / ``carbon dioxide``: a small model's Yes
    between different words is not trusted), when one response is a short list
    (``hydrogen and oxygen``; with a ``question`` asking for several things, ``and``, ``both``,
    ``two``..``five``, also one comma: ``Paris, France``) and the other lacks one of its words
    (a partial answer), or
    when a short response is restated without one of its numbers (``1776`` for ``July 4, 1776``).
    Every rule only turns votes into CANNOT_TELL, the conservative side.
    """
    verdict = parse_verdict(reply)
    if verdict is Verdict.CANNOT_TELL:
        return verdict
    restated = restated_answers(reply)
    if restated is None:
        return Verdict.CANNOT_TELL
    ra, rb = restated
    a, b = str(response_a), str(response_b)
    if not (restatement_matches(ra, a) and restatement_matches(rb, b)):
        return Verdict.CANNOT_TELL
    if verdict is Verdict.YES:
        ca, cb = _content(ra), _content(rb)
        if _numbers(ra) != _numbers(rb) or not (ca <= cb or cb <= ca):
            return Verdict.CANNOT_TELL
        several = question is not None and _SEVERAL_RE.search(str(question)) is not None
        if _drops_a_listed_item(a, b, several) or _drops_a_listed_item(b, a, several):
            return Verdict.CANNOT_TELL
        if _drops_a_number(ra, a) or _drops_a_number(rb, b):
            return Verdict.CANNOT_TELL
    return verdict
