"""LLM answer comparison without a model: prompt, reply parsing, votes, cache, failures, configuration.

A scripted in-process backend counts its calls, so every test can tell a cache
hit or a shortcut from a model call. HTTP and real-model paths are in
test_llm_equivalence_http.py and test_llm_equivalence_local.py.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from autojudge.core.compare.llm import (
    PROMPT_VERSION,
    ChatBackend,
    ChatRequest,
    ComparerBackendError,
    ComparerConfig,
    ComparerConfigError,
    ComparerSettings,
    LLMComparedTask,
    LLMEquivalenceChecker,
    ReplyCache,
    Verdict,
    aggregate_votes,
    build_messages,
    parse_comparer_spec,
    parse_verdict,
    parse_vote,
)
from autojudge.core.compare.llm import prompt as prompt_mod
from autojudge.core.compare.llm.cache import default_cache_path, reply_key
from autojudge.core.task import Example

Y, N, C = Verdict.YES, Verdict.NO, Verdict.CANNOT_TELL


class ScriptedBackend(ChatBackend):
    """Replies from ``rule(request)``; records every request it is sent."""

    def __init__(self, rule: Callable[[ChatRequest], str], model_id: str = "scripted:v1") -> None:
        self.rule, self.model_id, self.sent = rule, model_id, []

    @property
    def comparer_id(self) -> str:
        return self.model_id

    def complete(self, requests: Sequence[ChatRequest]) -> list[str]:
        self.sent.extend(requests)
        return [self.rule(r) for r in requests]


def user_text(req: ChatRequest) -> str:
    return req.message_dicts()[-1]["content"]


def shown(req: ChatRequest) -> tuple[str, str]:
    """(Response A, Response B) as shown in a request."""
    text = user_text(req)
    a = text.split("Response A:\n", 1)[1].split("\n\nResponse B:\n", 1)[0]
    b = text.split("\n\nResponse B:\n", 1)[1].split("\n\nDo Response A", 1)[0]
    return a, b


def same_last_word(req: ChatRequest) -> str:
    """A comparing model that is right when answers are their last word."""
    a, b = shown(req)
    same = a.split()[-1].strip(".").lower() == b.split()[-1].strip(".").lower()
    return f"A: {a}\nB: {b}\nSame: {'Yes' if same else 'No'}"


def restating(req: ChatRequest, word: str) -> str:
    """A reply in the prompt's format that restates each shown response's last word."""
    a, b = (x.split()[-1].strip(".") for x in shown(req))
    return f"A: {a}\nB: {b}\nSame: {word}"


# -- prompt -----------------------------------------------------------------------------------------------


def test_prompt_text_is_pinned_to_its_version():
    # Changing SYSTEM_PROMPT or USER_TEMPLATE without bumping PROMPT_VERSION would serve stale cached replies.
    assert PROMPT_VERSION == "equiv-v1"
    assert prompt_mod.prompt_sha256() == "00e4f9f5167f5803790d46bb7c00bf321fddd5beb23a1cba379c785183155188"


def test_messages_show_question_and_both_responses_in_order():
    msgs = build_messages("  What is 2+2? ", "It is {4}.", "Four")
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert user.startswith("Question:\nWhat is 2+2?\n\nResponse A:\nIt is {4}.\n\nResponse B:\nFour\n\n")
    assert user.endswith("Same: <Yes, No or Unsure>")


# -- parsing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("Yes", Y),
        ("yes", Y),
        ("YES.", Y),
        ("No", N),
        ("no.", N),
        ("  **Yes**  ", Y),
        ('"No"', N),
        ("`Yes`", Y),
        ("Yes, both responses say 18.", Y),
        ("Yes. There is no difference.", Y),  # the leading word decides, a later "no" does not
        ("No, A says 18 and B says 20.", N),
        ("A: 18\nB: 18\nSame: Yes", Y),
        ("A: $18\nB: $20\nSame: No", N),
        ("A: Paris\nB: unclear\nSame: Unsure", C),
        ("**A:** 18\n**B:** 18\n**Same:** **Yes**", Y),
        ("A: yes\nB: no\nSame: No", N),  # answers that are themselves yes/no do not confuse the verdict
        ("A: no\nB: no\nSame: yes", Y),
        ("A: 18\nB: 18\nSame:", C),  # an empty verdict
        ("A: 18\nB: 18", C),  # cut short before the verdict line
        ("A: 18\nB: 18\nSame: they match", C),
        ("Verdict: No", N),
        ("Final answer: yes", Y),
        ("Answer: No.", N),
        ("The answers are identical, so the answer is yes.", Y),
        ("Both give 18; final verdict = yes", Y),
        ("Judgement: true", Y),
        ("Decision - false", N),
        ("True", Y),
        ("Unsure", C),
        ("I cannot tell.", C),
        ("Can't tell", C),
        ("not sure", C),
        ("It is unclear whether they agree.", C),
        ("I don't know", C),
        ("They are not the same.", C),  # 'not' alone is no verdict word
        ("Both answers agree, yes they do.", Y),  # one kind of verdict word in the text
        ("Maybe yes, maybe no.", C),  # both kinds
        ("<think>A says 18, B says 20, so no</think>\nSame: No", N),
        ("<think>they are the same, yes</think>No", N),  # the thought is dropped
        ("<think>let me compare... yes", C),  # unfinished thought: no verdict
        ("", C),
        ("   \n  ", C),
        ("The capital of France is Paris.", C),  # a model that answered the question instead
        ("Yesterday was sunny.", C),  # 'yes' inside a word
        ("Nobody knows.", C),  # 'no' inside a word
        ("Nope", N),
        ("Yep!", Y),
    ],
)
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) is verdict


def test_parse_verdict_of_non_strings_is_cannot_tell():
    assert parse_verdict(None) is C
    assert parse_verdict(42) is C  # type: ignore[arg-type]


# -- votes: the restated answers must be the ones shown (issue 17) ------------------------------------------


@pytest.mark.parametrize(
    "reply, a, b, vote",
    [
        # the four false "equivalent" verdicts of issue 17: the model wrote the right answer instead of B
        ("A: 6\nB: 6\nSame: Yes", "6", "8", C),
        ("A: 8\nB: 8\nSame: Yes", "8", "6", C),
        ("A: Jane Austen\nB: Jane Austen\nSame: Yes", "Jane Austen", "Charlotte Bronte", C),
        ("A: carbon dioxide\nB: carbon dioxide\nSame: Yes", "carbon dioxide", "oxygen", C),
        ("A: blue whale\nB: blue whale\nSame: Yes", "the blue whale", "the African elephant", C),
        # Yes to two different numbers it wrote down itself
        ("A: 2\nB: 4\nSame: Yes", "2", "4", C),
        ("A: 19\nB: 9\nSame: Yes", "so 19.00", "it is 9", C),
        # faithful restatements keep their verdict
        ("A: 6\nB: 8\nSame: No", "6", "8", N),
        ("A: Jane Austen\nB: Charlotte Bronte\nSame: No", "Jane Austen", "Charlotte Bronte", N),
        ("A: 6\nB: six\nSame: Yes", "6", "A hexagon has six sides.", Y),
        ("A: 6\nB: 6\nSame: Yes", "6", "A hexagon has six sides.", Y),  # number words count as digits
        ("**A:** Emily Brontë\n**B:** Emily Bronte\n**Same:** Yes", "Emily Bronte", "Emily Brontë", Y),
        ("A: 1,440\nB: 1440\nSame: Yes", "1,440", "1440", Y),
        ("A: 19\nB: 19.00\nSame: Yes", "So the answer is \\boxed{19}.", "#### 19.00", Y),
        ("A: Paris\nB: the capital is Paris\nSame: Yes", "Paris", "The capital of France is Paris.", Y),
        ("A: Paris\nB: Paris\nSame: Yes", "PARIS.", "It's Paris of course", Y),
        ("Response A: Canberra\nResponse B: Canberra\nSame: Yes", "Canberra", "It is Canberra", Y),
        ("A: Leonardo\nB: Leonardo da Vinci\nSame: Yes", "Leonardo", "Leonardo da Vinci", Y),  # nested words
        ("A: 4 July 1776\nB: July 4, 1776\nSame: Yes", "4 July 1776", "July 4, 1776", Y),
        # a Yes the words do not support: different words on both sides, or a listed item dropped
        ("A: carbon dioxide\nB: oxygen\nSame: Yes", "carbon dioxide", "oxygen", C),
        ("A: CO2\nB: carbon dioxide\nSame: Yes", "CO2", "carbon dioxide", C),  # synonyms: the price
        (
            "A: Franklin D. Roosevelt\nB: Theodore Roosevelt\nSame: Yes",
            "Franklin D. Roosevelt",
            "Theodore Roosevelt",
            C,
        ),
        ("A: 42.195 km\nB: 42.195 miles\nSame: Yes", "42.195 km", "42.195 miles", C),
        (
            "A: hydrogen\nB: hydrogen\nSame: Yes",
            "hydrogen and oxygen",
            "hydrogen",
            C,
        ),  # truncated restatement
        ("A: 1776\nB: 1776\nSame: Yes", "July 4, 1776", "1776", C),  # a short answer's number dropped
        ("A: 1945\nB: 1945\nSame: Yes", "1945", "It ended in 1945, with Japan's surrender in 1945", Y),
        ("A: Wilbur Wright\nB: Wilbur Wright\nSame: Yes", "Wilbur Wright", "Orville & Wilbur Wright", C),
        ("A: red, blue\nB: red, blue\nSame: Yes", "red, blue", "red, yellow, blue", C),
        ("A: Ottawa\nB: Ottawa\nSame: Yes", "Ottawa", "It is Ottawa, in Ontario.", Y),  # one comma: no list
        (
            "A: red, yellow and blue\nB: blue, red, yellow\nSame: Yes",
            "red, yellow and blue",
            "blue, red, yellow",
            Y,
        ),
        # a No needs no support from the words
        ("A: carbon dioxide\nB: CO2\nSame: No", "carbon dioxide", "CO2", N),
        (
            "A: Wilbur and Orville\nB: Orville and Wilbur\nSame: Yes",
            "Wilbur and Orville",
            "Orville, Wilbur",
            Y,
        ),
        # a vote that does not show what it compared, or misquotes: cannot tell
        ("Same: Yes", "6", "6.0", C),
        ("Same: No", "6", "8", C),
        ("Yes", "Paris", "paris!", C),
        ("A: 6\nSame: Yes", "6", "six", C),
        ("A: hydrogen and oxygen\nB: hydrogen and oxygen\nSame: Yes", "hydrogen and oxygen", "hydrogen", C),
        ("A: 6\nB: 8\nSame: No", "6", "seven", C),
        ("A: \nB: 8\nSame: No", "6", "8", C),
        ("A: the\nB: 8\nSame: No", "the 6", "8", C),  # filler alone restates nothing
        ("A: 100 degrees Celsius\nB: 100\nSame: Yes", "100 °C", "100", C),  # conservative: words not shown
        # numbers in words and spellings of units are normalised
        ("A: 366\nB: 366\nSame: Yes", "366", "three hundred sixty-six", Y),
        ("A: 206\nB: two hundred and six\nSame: Yes", "206", "two hundred and six", Y),
        ("A: 3,000,000\nB: three million\nSame: Yes", "approximately 3,000,000", "about three million", Y),
        ("A: 1912\nB: 1912\nSame: Yes", "1912", "nineteen twelve", C),  # read as 19 and 12
        ("A: 42.195 km\nB: 42.195 kilometres\nSame: Yes", "42.195 km", "42.195 kilometres", Y),
        ("A: 343 m/s\nB: 343 metres per second\nSame: Yes", "343 m/s", "343 metres per second", Y),
        ("A: 100 °C\nB: 100 degrees Celsius\nSame: Yes", "100 °C", "100 degrees Celsius", Y),
        # an unparsable verdict stays cannot tell whatever the restatement
        ("A: 6\nB: 6\nSame: maybe", "6", "6", C),
        ("A: 6\nB: 6", "6", "6", C),
    ],
)
def test_parse_vote_checks_the_restated_answers(reply, a, b, vote):
    assert parse_vote(reply, a, b) is vote


def test_one_comma_is_a_list_when_the_question_asks_for_several_things():
    reply = "A: Paris, France\nB: France\nSame: Yes"
    assert parse_vote(reply, "Paris, France", "France") is Y
    assert parse_vote(reply, "Paris, France", "France", question="In which city and country is it?") is C
    assert parse_vote(reply, "Paris, France", "France", question="Where is the Eiffel Tower?") is Y
    same = "A: Paris, France\nB: Paris, France\nSame: Yes"
    assert parse_vote(same, "Paris, France", "in Paris, in France", question="Which city and country?") is Y
    ottawa = "A: Ottawa\nB: Ottawa\nSame: Yes"
    assert (
        parse_vote(ottawa, "Ottawa", "It is Ottawa, in Ontario.", question="What is the capital of Canada?")
        is Y
    )


def test_the_checker_passes_the_question_to_the_vote_rules():
    checker = LLMEquivalenceChecker(ScriptedBackend(lambda r: restating(r, "Yes")))
    assert checker.check("Where is it?", "Paris, France", "France").votes == (Y, Y)
    assert checker.check("Which city and country?", "Paris, France", "France").votes == (C, C)


def test_a_vote_is_checked_against_the_responses_in_its_own_order():
    # (a, b) = ("6", "8"); the second request shows them as ("8", "6")
    assert parse_vote("A: 8\nB: 6\nSame: No", "8", "6") is N
    assert parse_vote("A: 8\nB: 6\nSame: No", "6", "8") is C


def test_a_model_that_rewrites_response_b_cannot_make_a_pair_equivalent():
    """The issue-17 failure: the model restates Response A (the right answer) as B and says Yes."""

    def copies_a(req: ChatRequest) -> str:
        a, _ = shown(req)
        return f"A: {a}\nB: {a}\nSame: Yes"

    backend = ScriptedBackend(copies_a)
    checker = LLMEquivalenceChecker(backend, ComparerSettings(both_orders=True))
    pairs = [
        ("How many sides does a hexagon have?", "6", "8"),
        ("Who wrote Emma?", "Jane Austen", "Charlotte Bronte"),
    ]
    results = checker.check_many(pairs)
    assert [r.votes for r in results] == [(C, C), (C, C)]  # the old parser read (Y, Y): "equivalent"
    assert [parse_verdict(x) for x in results[0].replies] == [Y, Y]
    assert not any(r.equivalent for r in results)
    # the same model on a truly equivalent pair: the copy is a faithful restatement, so it counts
    res = checker.check("How many sides does a hexagon have?", "6", "six")
    assert res.votes == (Y, Y) and res.equivalent


def test_vote_rules_are_part_of_the_described_settings():
    from autojudge.core.compare.llm import VOTE_RULES

    checker = LLMEquivalenceChecker(ScriptedBackend(same_last_word))
    assert checker.describe()["vote_rules"] == VOTE_RULES == "restated-v1"
    assert ComparerConfig("local:smollm2-135m-instruct").describe()["vote_rules"] == VOTE_RULES


def test_shipped_general_knowledge_pairs_are_balanced_and_well_formed():
    path = REPO / "bench" / "data" / "qa_comparer_pairs.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 100 and sum(r["truth"] for r in rows) * 2 == len(rows)
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({(r["question"], r["a"], r["b"]) for r in rows}) == len(rows)
    for r in rows:
        assert {"id", "source", "category", "question", "a", "b", "truth"} <= set(r)
        assert isinstance(r["truth"], bool) and r["a"].strip() and r["b"].strip() and r["a"] != r["b"]
    assert "Apache-2.0" in (path.parent / "README.md").read_text(encoding="utf-8")


# -- votes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "votes, verdict",
    [
        ((Y,), Y),
        ((N,), N),
        ((C,), C),
        ((Y, Y), Y),
        ((Y, N), C),  # position bias: the orders disagree
        ((Y, C), C),
        ((N, N), N),
        ((N, C), C),
        ((Y, Y, N), Y),
        ((Y, N, C), C),
        ((Y, Y, C, C), C),  # a tie is no majority
        ((Y, Y, Y, C), Y),
        ((), C),
    ],
)
def test_aggregate_votes_is_a_strict_majority(votes, verdict):
    assert aggregate_votes(votes) is verdict


def test_settings_refuse_repeated_greedy_samples():
    with pytest.raises(ValueError, match="temperature > 0"):
        ComparerSettings(samples=3, temperature=0.0)
    with pytest.raises(ValueError):
        ComparerSettings(samples=0)
    with pytest.raises(ValueError):
        ComparerSettings(max_tokens=0)


# -- the checker ------------------------------------------------------------------------------------------

Q = "How much does Janet make?"


def test_both_orders_ask_twice_and_need_two_yes():
    # a position-biased model: says Yes whenever Response A is the short one (restating both in full)
    def biased(r: ChatRequest) -> str:
        a, b = shown(r)
        return f"A: {a}\nB: {b}\nSame: {'Yes' if a == 'Paris.' else 'No'}"

    backend = ScriptedBackend(biased)
    checker = LLMEquivalenceChecker(backend, ComparerSettings(both_orders=True))
    res = checker.check(Q, "Paris.", "Paris Texas")
    assert res.votes == (Y, N) and res.orders == ("ab", "ba")
    assert res.verdict is C and not res.equivalent
    assert [shown(r) for r in backend.sent] == [("Paris.", "Paris Texas"), ("Paris Texas", "Paris.")]
    one_order = LLMEquivalenceChecker(ScriptedBackend(backend.rule), ComparerSettings(both_orders=False))
    res1 = one_order.check(Q, "Paris.", "Paris Texas")
    assert res1.votes == (Y,) and res1.equivalent  # the bias goes through with a single order
    assert len(one_order.backend.sent) == 1


def test_checker_verdicts_with_a_correct_model():
    checker = LLMEquivalenceChecker(ScriptedBackend(same_last_word))
    items = [
        (Q, "So she makes 18", "The answer is 18."),
        (Q, "So she makes 18", "It is 20"),
        (Q, "x 18", "18"),
    ]
    assert checker.equivalent_many(items) == [True, False, True]
    outcomes = checker.outcomes(items)
    assert [o.value for o in outcomes] == [True, False, True] and all(o.ok for o in outcomes)
    assert checker.stats.as_dict()["verdicts"] == {"yes": 4, "no": 2, "cannot_tell": 0}


def test_majority_of_seeded_samples():
    votes = {0: "Yes", 1: "No", 2: "Yes"}
    backend = ScriptedBackend(lambda r: restating(r, votes[r.seed]))
    checker = LLMEquivalenceChecker(backend, ComparerSettings(both_orders=False, samples=3, temperature=0.7))
    res = checker.check(Q, "18", "eighteen")
    assert res.votes == (Y, N, Y) and res.verdict is Y
    assert [(r.seed, r.temperature) for r in backend.sent] == [(0, 0.7), (1, 0.7), (2, 0.7)]
    votes[2] = "Unsure"
    res = LLMEquivalenceChecker(ScriptedBackend(backend.rule), checker.settings).check(Q, "18", "eighteen")
    assert res.votes == (Y, N, C) and res.verdict is C


def test_shortcuts_never_call_the_model():
    backend = ScriptedBackend(lambda r: pytest.fail("the model was called"))
    checker = LLMEquivalenceChecker(backend)
    results = checker.check_many(
        [(Q, "Paris", "  paris. "), (Q, None, "Paris"), (Q, "Paris", ""), (Q, None, None)]
    )
    assert [r.verdict for r in results] == [Y, N, N, N]
    assert [r.shortcut for r in results] == ["identical", "no answer", "no answer", "no answer"]
    assert backend.sent == []
    strict = LLMEquivalenceChecker(ScriptedBackend(same_last_word), exact_match_shortcut=False)
    assert strict.check(Q, "Paris", "paris").shortcut is None and len(strict.backend.sent) == 2


def test_duplicate_pairs_in_one_batch_are_asked_once():
    backend = ScriptedBackend(same_last_word)
    checker = LLMEquivalenceChecker(backend)
    res = checker.check_many([(Q, "is 18", "was 18")] * 3)
    assert len(backend.sent) == 2 and all(r.equivalent for r in res)


# -- cache ------------------------------------------------------------------------------------------------


def test_cache_hit_and_miss(tmp_path):
    path = tmp_path / "replies.sqlite3"
    first = ScriptedBackend(same_last_word)
    c1 = LLMEquivalenceChecker(first, cache=ReplyCache(path))
    items = [(Q, "So 18", "It is 18"), (Q, "So 18", "It is 20")]
    r1 = c1.check_many(items)
    assert len(first.sent) == 4 and all(r.cached == 0 for r in r1)

    # a new checker (as after a restart) on the same file: no model call at all
    second = ScriptedBackend(lambda r: pytest.fail("cache miss"))
    c2 = LLMEquivalenceChecker(second, cache=ReplyCache(path))
    r2 = c2.check_many(items)
    assert second.sent == [] and [r.verdict for r in r2] == [r.verdict for r in r1]
    assert all(r.cached == 2 for r in r2) and c2.stats.cache_hits == 4 and c2.stats.backend_calls == 0
    # swapped pair with both orders: the same two requests, still hits
    assert c2.check(Q, "It is 20", "So 18").cached == 2 and second.sent == []

    # misses: another comparing model, a single order of a new pair, other settings, another question
    for checker, n in [
        (
            LLMEquivalenceChecker(
                ScriptedBackend(same_last_word, model_id="scripted:v2"), cache=ReplyCache(path)
            ),
            2,
        ),
        (
            LLMEquivalenceChecker(
                ScriptedBackend(same_last_word), ComparerSettings(max_tokens=32), cache=ReplyCache(path)
            ),
            2,
        ),
    ]:
        checker.check_many(items[:1])
        assert len(checker.backend.sent) == n
    other_q = LLMEquivalenceChecker(ScriptedBackend(same_last_word), cache=ReplyCache(path))
    other_q.check("A different question?", "So 18", "It is 18")
    assert len(other_q.backend.sent) == 2


def test_cache_key_covers_prompt_version_order_and_sampling():
    msgs = build_messages(Q, "a", "b")
    base = dict(max_tokens=64, temperature=0.0, seed=None)
    k = reply_key("j", "equiv-v1", msgs, **base)
    assert k == reply_key("j", "equiv-v1", build_messages(Q, "a", "b"), **base)
    others = {
        reply_key("j", "equiv-v2", msgs, **base),
        reply_key("j2", "equiv-v1", msgs, **base),
        reply_key("j", "equiv-v1", build_messages(Q, "b", "a"), **base),
        reply_key("j", "equiv-v1", msgs, max_tokens=64, temperature=0.7, seed=0),
        reply_key("j", "equiv-v1", msgs, max_tokens=64, temperature=0.7, seed=1),
    }
    assert k not in others and len(others) == 5


def test_cached_replies_are_parsed_again_on_read(tmp_path):
    """Replies, not verdicts, are stored: the current parser reads them."""
    cache = ReplyCache(tmp_path / "c.sqlite3")
    backend = ScriptedBackend(lambda r: pytest.fail("should be cached"))
    checker = LLMEquivalenceChecker(backend, ComparerSettings(both_orders=False), cache=cache)
    (req,) = [r for _, r in checker._requests(Q, "18", "It is 18")]
    cache.put(
        checker._key(req),
        "A: 18\nB: 18\n**Same:** YES",
        comparer_id=backend.comparer_id,
        prompt_version=PROMPT_VERSION,
    )
    res = checker.check(Q, "18", "It is 18")
    assert res.replies == ("A: 18\nB: 18\n**Same:** YES",) and res.verdict is Y and res.cached == 1


def test_cache_is_shared_between_processes(tmp_path):
    path = tmp_path / "shared.sqlite3"
    ReplyCache(path).put("k1", "Same: Yes", comparer_id="j", prompt_version="v")
    code = (
        "import sys; from autojudge.core.compare.llm.cache import ReplyCache; c = ReplyCache(sys.argv[1]); "
        "assert c.get('k1') == 'Same: Yes'; c.put('k2', 'Same: No', comparer_id='j', prompt_version='v')"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    fresh = ReplyCache(path)
    assert fresh.get_many(["k1", "k2", "k3"]) == {"k1": "Same: Yes", "k2": "Same: No"}
    assert len(fresh) == 2 and fresh.hits == 2 and fresh.misses == 1
    with pytest.raises(TypeError):
        fresh.put("k4", None, comparer_id="j", prompt_version="v")  # type: ignore[arg-type]


def test_cache_location_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AJ_LLMJUDGE_CACHE", str(tmp_path / "x.sqlite3"))
    assert default_cache_path() == tmp_path / "x.sqlite3"
    monkeypatch.setenv("AJ_LLMJUDGE_CACHE", "off")
    assert default_cache_path() is None
    assert ComparerConfig.from_env("AJ_T", "local:x").build_cache() is None
    monkeypatch.delenv("AJ_LLMJUDGE_CACHE")
    monkeypatch.setenv("AJ_CACHE_DIR", str(tmp_path / "cache"))
    assert default_cache_path() == tmp_path / "cache" / "llmjudge" / "replies.sqlite3"


# -- failures ---------------------------------------------------------------------------------------------


class FailingBackend(ChatBackend):
    """Answers the first ``ok`` requests of a batch, then fails the batch (keeping those replies)."""

    def __init__(self, ok: int) -> None:
        self.ok, self.calls = ok, 0

    @property
    def comparer_id(self) -> str:
        return "failing"

    def complete(self, requests):
        self.calls += 1
        partial = {i: same_last_word(r) for i, r in enumerate(requests[: self.ok])}
        raise ComparerBackendError("endpoint down", partial=partial)


def test_backend_failure_raises_and_keeps_the_replies_that_arrived(tmp_path):
    cache = ReplyCache(tmp_path / "c.sqlite3")
    checker = LLMEquivalenceChecker(FailingBackend(ok=1), cache=cache)
    with pytest.raises(ComparerBackendError, match="endpoint down"):
        checker.equivalent(Q, "it is 18", "so 18")
    assert len(cache) == 1  # the reply that arrived is kept; the failure is not cached
    checker.backend.ok = 0
    with pytest.raises(ComparerBackendError):
        checker.outcomes([(Q, "it is 18", "so 18")])
    assert len(cache) == 1 and checker.backend.calls == 2
    # once the endpoint is back, only the missing request is sent
    backend = ScriptedBackend(same_last_word, model_id="failing")
    again = LLMEquivalenceChecker(backend, cache=cache)
    assert again.equivalent(Q, "it is 18", "so 18") and len(backend.sent) == 1


def test_a_backend_returning_the_wrong_number_of_replies_is_an_error():
    class Short(ScriptedBackend):
        def complete(self, requests):
            return ["Same: Yes"]

    with pytest.raises(ComparerBackendError, match="1 replies for 2 requests"):
        LLMEquivalenceChecker(Short(same_last_word)).check(Q, "a 1", "b 2")


# -- configuration ----------------------------------------------------------------------------------------


def test_parse_comparer_spec():
    assert parse_comparer_spec("local:qwen2.5-coder-1.5b-instruct") == (
        "local",
        {"model": "qwen2.5-coder-1.5b-instruct"},
    )
    assert parse_comparer_spec("local:/models/my dir") == ("local", {"model": "/models/my dir"})
    assert parse_comparer_spec("openai:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-7B-Instruct") == (
        "openai",
        {"base_url": "http://127.0.0.1:8000/v1", "model": "Qwen/Qwen2.5-7B-Instruct"},
    )
    for bad in [
        "",
        "qwen",
        "local:",
        "openai:http://x/v1",
        "openai:ftp://x#m",
        "openai:http://x/v1#",
        "vllm:x",
    ]:
        with pytest.raises(ComparerConfigError, match="bad judge spec"):
            parse_comparer_spec(bad)


def test_config_from_env():
    env = {
        "AJ_T": "openai:https://api.example.com/v1#judge-model",
        "AJ_T_API_KEY_ENV": "MY_KEY",
        "AJ_T_BOTH_ORDERS": "0",
        "AJ_T_SAMPLES": "5",
        "AJ_T_TEMPERATURE": "0.6",
        "AJ_T_MAX_TOKENS": "32",
        "AJ_T_TIMEOUT": "7.5",
        "AJ_T_RETRIES": "2",
        "AJ_T_CONCURRENCY": "8",
        "MY_KEY": "sk-secret",
    }
    cfg = ComparerConfig.from_env("AJ_T", "local:x", env)
    assert (cfg.both_orders, cfg.samples, cfg.temperature, cfg.max_tokens) == (False, 5, 0.6, 32)
    backend = cfg.build_backend()
    assert type(backend).__name__ == "OpenAIChatComparer"
    assert (backend.base_url, backend.model, backend.api_key_env) == (
        "https://api.example.com/v1",
        "judge-model",
        "MY_KEY",
    )
    assert (backend.timeout, backend.max_retries, backend.concurrency) == (7.5, 2, 8)
    described = cfg.describe()
    assert described["api_key_env"] == "MY_KEY" and "sk-secret" not in repr(described)
    assert described["prompt_version"] == PROMPT_VERSION

    default = ComparerConfig.from_env("AJ_T", "local:smollm2-135m-instruct", {})
    assert (
        default.spec == "local:smollm2-135m-instruct" and default.both_orders and default.dtype == "float32"
    )
    local = default.build_backend()
    assert type(local).__name__ == "LocalChatComparer" and not local.loaded  # nothing loaded yet
    assert local.comparer_id.startswith("local:smollm2-135m-instruct@float32#")

    for bad in ({"AJ_T_SAMPLES": "three"}, {"AJ_T_BOTH_ORDERS": "maybe"}, {"AJ_T": "nonsense"},
                {"AJ_T_SAMPLES": "3"}):  # fmt: skip
        with pytest.raises(ComparerConfigError):
            ComparerConfig.from_env("AJ_T", "local:x", bad)


# -- the task base class ----------------------------------------------------------------------------------


class CapitalTask(LLMComparedTask):
    """A third-party style task built on the public API."""

    name = "test-capitals"
    description = "Capitals (test)."
    comparer_env_prefix = "AJ_TEST_CAPITALS_JUDGE"

    def load(self, split, *, data_dir=None, limit=None):
        return [Example("fr", "What is the capital of France?", reference=["Paris", "Paris, France"])]

    def build_messages(self, example):
        return [{"role": "user", "content": example.question}]

    def extract_answer(self, response):
        return response.strip() or None


def test_llm_compared_task_routes_checks_through_one_batched_checker(monkeypatch, tmp_path):
    monkeypatch.setenv("AJ_LLMJUDGE_CACHE", "off")
    backend = ScriptedBackend(same_last_word)
    task = CapitalTask()
    checker = LLMEquivalenceChecker(backend)
    monkeypatch.setattr(task, "checker", lambda: checker)
    (ex,) = task.load("test")
    items = [("It is Paris", "Paris", ex), ("It is Paris", "Lyon", ex), (None, "Paris", ex)]
    outcomes = task.equivalent_outcomes(items)
    assert [o.value for o in outcomes] == [True, False, False] and all(o.ok for o in outcomes)
    assert len(backend.sent) == 4  # one batch: 2 compared pairs x 2 orders; the None pair is a shortcut
    assert {user_text(r).split("\n")[1] for r in backend.sent} == {ex.question}
    assert task.equivalent_many(items) == [True, False, False] and task.equivalent("Paris", "paris", ex)
    sent = len(backend.sent)
    assert task.is_correct("paris, france", ex)  # an accepted reference: no model call
    assert not task.is_correct(None, ex) and len(backend.sent) == sent
    assert task.is_correct("The capital is Paris", ex) and not task.is_correct("Lyon", ex)
    assert shown(backend.sent[-1]) == ("Paris", "Lyon")  # compared with the first reference
    assert [o.value for o in task.correct_outcomes([("Paris", ex), ("Rome", ex)])] == [True, False]


def test_llm_compared_task_surfaces_failures_instead_of_labels(monkeypatch):
    task = CapitalTask()
    checker = LLMEquivalenceChecker(FailingBackend(ok=0))
    monkeypatch.setattr(task, "checker", lambda: checker)
    (ex,) = task.load("test")
    with pytest.raises(ComparerBackendError):
        task.equivalent_outcomes([("Paris", "Lyon", ex)])
    with pytest.raises(ComparerBackendError):
        task.is_correct("Lyon", ex)


def test_llm_compared_task_config_from_its_env_prefix_and_copies_drop_the_checker(monkeypatch, tmp_path):
    monkeypatch.setenv("AJ_LLMJUDGE_CACHE", str(tmp_path / "c.sqlite3"))
    monkeypatch.setenv("AJ_TEST_CAPITALS_JUDGE", "openai:http://127.0.0.1:9/v1#m1")
    task = CapitalTask()
    assert task.info()["judge"]["spec"] == "openai:http://127.0.0.1:9/v1#m1"
    c1 = task.checker()
    assert c1.comparer_id == "openai:m1" and task.checker() is c1
    assert c1.cache is not None and c1.cache.path == tmp_path / "c.sqlite3"
    monkeypatch.setenv("AJ_TEST_CAPITALS_JUDGE", "openai:http://127.0.0.1:9/v1#m2")
    assert task.checker().comparer_id == "openai:m2"  # a changed environment takes effect
    clone = copy.copy(task)  # what sending the task to a worker process does
    assert clone._checker is None and task._checker is not None
    fixed = CapitalTask(comparer=ComparerConfig("local:smollm2-135m-instruct", cache=None))
    assert (
        fixed.checker().comparer_id.startswith("local:smollm2-135m-instruct@")
        and fixed.checker().cache is None
    )
    monkeypatch.setenv("AJ_TEST_CAPITALS_JUDGE", "garbage")
    assert "bad judge spec" in task.info()["judge"]["error"]


# -- docs and the agreement benchmark's data ---------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def doc_block(marker: str) -> str:
    text = (REPO / "docs" / "tasks-qa.md").read_text(encoding="utf-8")
    m = re.search(rf"<!-- {marker} -->\n```text\n(.*?)\n```", text, re.DOTALL)
    assert m, f"docs/tasks-qa.md has no text block after <!-- {marker} -->"
    return m.group(1)


def test_docs_show_the_prompt_verbatim():
    assert doc_block("llmjudge-system-prompt") == prompt_mod.SYSTEM_PROMPT
    assert doc_block("llmjudge-user-template") == prompt_mod.USER_TEMPLATE
    assert f"version `{PROMPT_VERSION}`" in (REPO / "docs" / "tasks-qa.md").read_text(encoding="utf-8")


def test_agreement_pairs_carry_math_verify_truth():
    """The labelled set of bench/bench_llm_judge_agreement.py: balanced, truth = math equivalence."""
    from autojudge.core.compare.math_verify import equivalent_answers
    from autojudge.plugins.math.extract import extract_final_answer

    rows = [
        json.loads(line)
        for line in (REPO / "tests" / "data" / "qa_judge_pairs.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 40 and sum(r["truth"] for r in rows) == 20 and len({r["id"] for r in rows}) == 40
    assert {r["source"] for r in rows} == {"real", "synthetic"}
    for r in rows:
        xa, xb = extract_final_answer(r["a"]), extract_final_answer(r["b"])
        assert xa is not None and xb is not None, r["id"]
        assert equivalent_answers(xa, xb, numeric=True) is r["truth"], r["id"]
        assert r["a"].strip() != r["b"].strip() and r["question"]


def test_local_backend_batches_greedy_requests_on_a_tiny_model():
    """The local path end to end on a tiny random model (real transformers generate, no weights to load)."""
    from conftest import make_char_tokenizer, make_tiny_model

    from autojudge.core.compare.llm import LocalChatComparer

    tok = make_char_tokenizer()
    tok.pad_token = None  # a tokenizer without a pad token must still batch, and be left as it was
    model = make_tiny_model("qwen2", seed=0)
    comparer = LocalChatComparer("tiny", dtype="float32", batch_size=2, model=model, tokenizer=tok)
    reqs = [
        ChatRequest.make(build_messages(Q, "so 18", "it is 18"), max_tokens=5),
        ChatRequest.make(build_messages(Q, "a", "b"), max_tokens=3),
        ChatRequest.make(build_messages(Q, "x", "y"), max_tokens=4, temperature=0.8, seed=1),
    ]
    out = comparer.complete(reqs)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert len(out[1]) <= 3 and len(out[0]) <= 5  # one character per token, per-request limits
    assert tok.pad_token is None and tok.padding_side == "right"
    singles = [comparer.complete([r])[0] for r in reqs]
    assert singles[2] == out[2]  # a seeded sample is reproducible
    assert comparer.complete(reqs[:2]) == out[:2]  # greedy batches are deterministic
