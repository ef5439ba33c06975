"""Agreement of the LLM comparer with ground-truth equivalence on labelled answer pairs.

Two sets (``--set``): ``gsm8k`` (default, below) and ``general``
(``bench/data/qa_comparer_pairs.jsonl``: 114 hand-written general-knowledge and
open-QA answer pairs, 57 equivalent, with near-miss entities, units, name
variants, numbers in words and partial answers; truth labelled by hand, see
``bench/data/README.md``).

The pairs (``tests/data/qa_judge_pairs.jsonl``, rebuilt with ``--build``) are two
full responses to one GSM8K test problem whose truth ("same final answer or
not") comes from autojudge's math equivalence (math-verify on the extracted
answers), never from the LLM comparer:

* ``real``: responses in ``tests/data/math_model_outputs.jsonl`` (Qwen2.5-Coder-1.5B
  outputs and hand-written ones, at most ``MAX_REAL_CHARS`` characters) paired
  within a problem;
* ``synthetic``: the gold answer in two different phrasings and number formats
  (equivalent), or the gold answer against a perturbed one (+1, -1, x2, +10:
  not equivalent), for the GSM8K test problems after those.

The set is balanced (half equivalent) and deterministic for given inputs; the stored
file is the reference set (real pairs are named by line numbers of the outputs file as it
was when built: rebuilding after that file grows gives a different set). For each comparing model it
runs :class:`~autojudge.core.compare.llm.LLMEquivalenceChecker` as the ``qa`` task
does (prompt ``equiv-v1``, both orders, greedy), with the identical-answer
shortcut off so every pair reaches the model, and prints:

* agreement: the comparer says equivalent (a Yes in both orders) == truth; CANNOT_TELL
  counts as "not equivalent", as in mining;
* precision / recall / F1 of "equivalent";
* cannot-tell rate (final verdicts) and unparsed replies (single votes);
* false equivalences: pairs that are not equivalent but got "equivalent", as a
  count and as a share of all pairs and of the non-equivalent pairs;
* the same figures for one order only (the (a, b) vote), and how often the two
  orders agree;
* every figure twice, from the same replies: with the checker's votes
  (``parse_vote``: restated answers checked, rules ``restated-v1``) and with
  ``parse_verdict`` alone (the rule before issue 17);
* seconds per comparer request.

``--cache FILE`` keeps every reply in a reply cache, so an interrupted run
continues where it stopped, and ``--cached-only`` scores the pairs whose replies
are all in the cache without loading the model. ``--batch N`` asks N pairs (both
orders) per greedy batch: faster on a loaded CPU.

Usage (1 torch thread, no reply cache so timings are real)::

    AJ_DATA_DIR=../shared/datasets python bench/bench_llm_judge_agreement.py \\
        --models smollm2-135m-instruct,qwen2.5-coder-1.5b-instruct --n 40 --json runs/judge_agreement.json

Limits: GSM8K answers are numbers, so this measures the comparer on the easy end of
open QA (no paraphrase of names, no partial answers); 40 pairs give about +-8
points of sampling error on agreement.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PAIRS_FILE = REPO / "tests" / "data" / "qa_judge_pairs.jsonl"
GENERAL_FILE = REPO / "bench" / "data" / "qa_comparer_pairs.jsonl"
SETS = {"gsm8k": PAIRS_FILE, "general": GENERAL_FILE}
OUTPUTS_FILE = REPO / "tests" / "data" / "math_model_outputs.jsonl"
MAX_REAL_CHARS = 900

TEMPLATES = (
    "Working through the problem step by step, the result is {v}.",
    "The answer is {v}.",
    "After computing everything, we get a total of {v}.\n\nAnswer: {v}",
    "So the final answer is \\boxed{{{v}}}.",
    "Putting it together:\n#### {v}",
)


def truth_of(a: str, b: str) -> bool | None:
    """Ground truth: math equivalence of the two responses' extracted answers (None: an answer is missing)."""
    from autojudge.core.compare.math_verify import equivalent_answers
    from autojudge.plugins.math.extract import extract_final_answer

    xa, xb = extract_final_answer(a), extract_final_answer(b)
    if xa is None or xb is None:
        return None
    return equivalent_answers(xa, xb, numeric=True)


def _formats(v: int) -> list[str]:
    out = [str(v), f"{v}.00"]
    if abs(v) >= 1000:
        out.append(f"{v:,}")
    return out


def build_pairs(n: int, data_dir: str | None, seed: int = 0) -> list[dict[str, Any]]:
    """A balanced, deterministic set of ``n`` labelled pairs (see the module docstring)."""
    from autojudge.plugins.math.gsm8k import GSM8KTask

    rng = random.Random(seed)
    test = GSM8KTask(fewshot=0).load("test", data_dir=data_dir, limit=200)
    pairs: list[dict[str, Any]] = []

    by_problem: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for lineno, line in enumerate(OUTPUTS_FILE.read_text().splitlines(), 1):
        row = {**json.loads(line), "line": lineno}
        if row["task"] == "gsm8k" and len(row["response"]) <= MAX_REAL_CHARS:
            by_problem[int(row["id"].split("-")[2])].append(row)
    for idx in sorted(by_problem):
        rows = by_problem[idx]
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                t = truth_of(rows[i]["response"], rows[j]["response"])
                if t is not None:
                    pairs.append({"id": f"real-L{rows[i]['line']}~L{rows[j]['line']}", "source": "real",
                                  "question": test[idx].question, "a": rows[i]["response"],
                                  "b": rows[j]["response"], "truth": t})  # fmt: skip
    real_pos = [p for p in pairs if p["truth"]]
    real_neg = [p for p in pairs if not p["truth"]]
    k = min(len(real_pos), len(real_neg), n // 4)
    pairs = real_pos[:k] + real_neg[:k]

    used = set(by_problem)
    want_pos, want_neg = n // 2 - k, n - n // 2 - k
    for ex in test:
        if want_pos <= 0 and want_neg <= 0:
            break
        idx = int(ex.id.rsplit("-", 1)[1])
        if idx in used or not ex.reference.lstrip("-").isdigit():
            continue
        g = int(ex.reference)
        t1, t2 = rng.sample(TEMPLATES, 2)
        if want_pos >= want_neg:
            f1, f2 = rng.choice(_formats(g)), rng.choice(_formats(g))
            a, b, intended = t1.format(v=f1), t2.format(v=f2), True
        else:
            wrong = rng.choice([w for w in (g + 1, g - 1, 2 * g, g + 10) if w != g and w >= 0])
            a, b, intended = (
                t1.format(v=rng.choice(_formats(g))),
                t2.format(v=rng.choice(_formats(wrong))),
                False,
            )
            if rng.random() < 0.5:
                a, b = b, a
        t = truth_of(a, b)
        if t is not intended:  # the templates must be unambiguous to math-verify; skip any that are not
            continue
        pairs.append({"id": f"synthetic-{ex.id}", "source": "synthetic", "question": ex.question,
                      "a": a, "b": b, "truth": t})  # fmt: skip
        if intended:
            want_pos -= 1
        else:
            want_neg -= 1
    return pairs


def load_pairs(path: Path, n: int | None, source: str = "all") -> list[dict[str, Any]]:
    pairs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    pairs = [p for p in pairs if source in ("all", p["source"])]
    for p in (
        pairs
    ):  # the stored truth of GSM8K pairs must still be math-verify's (the general set is hand-labelled)
        if p["source"] in ("real", "synthetic") and truth_of(p["a"], p["b"]) is not p["truth"]:
            raise SystemExit(
                f"{path}: pair {p['id']} has truth {p['truth']}, math-verify disagrees; rebuild with --build"
            )
    if n is not None and n < len(pairs):  # keep the balance: first n/2 of each class
        pos = [p for p in pairs if p["truth"]][: n // 2]
        neg = [p for p in pairs if not p["truth"]][: n - n // 2]
        pairs = pos + neg
    return pairs


def _prf(pred: list[bool], truth: list[bool]) -> dict[str, float | None]:
    tp = sum(p and t for p, t in zip(pred, truth, strict=True))
    fp = sum(p and not t for p, t in zip(pred, truth, strict=True))
    fn = sum(t and not p for p, t in zip(pred, truth, strict=True))
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else None
    agree = sum(p == t for p, t in zip(pred, truth, strict=True)) / len(truth)
    return {"agreement": agree, "precision": precision, "recall": recall, "f1": f1}


def _score(votes: list[tuple[Any, ...]], truth: list[bool]) -> dict[str, Any]:
    """Figures for one way of voting: the final verdict is the checker's strict majority of ``votes``."""
    from autojudge.core.compare.llm import Verdict, aggregate_votes

    verdicts = [aggregate_votes(v) for v in votes]
    pred = [v is Verdict.YES for v in verdicts]
    false_eq = sum(p and not t for p, t in zip(pred, truth, strict=True))
    negatives = sum(not t for t in truth)
    return {
        **_prf(pred, truth),
        "cannot_tell_rate": sum(v is Verdict.CANNOT_TELL for v in verdicts) / len(verdicts),
        "false_equivalent": false_eq,
        "false_equivalent_of_all": false_eq / len(truth),
        "false_equivalent_of_non_equivalent": false_eq / negatives if negatives else None,
    }


def evaluate(
    model: str,
    pairs: list[dict[str, Any]],
    *,
    dtype: str,
    max_tokens: int,
    cache: Path | None = None,
    batch: int = 1,
    cached_only: bool = False,
) -> dict[str, Any]:
    from autojudge.core.compare.llm import (
        ComparerSettings,
        LLMEquivalenceChecker,
        LocalChatComparer,
        ReplyCache,
        Verdict,
        parse_verdict,
    )

    backend = LocalChatComparer(model, dtype=dtype, batch_size=2 * batch)  # both orders of `batch` pairs
    checker = LLMEquivalenceChecker(backend, ComparerSettings(both_orders=True, max_tokens=max_tokens),
                                    cache=ReplyCache(cache) if cache else None,
                                    exact_match_shortcut=False)  # fmt: skip
    if cached_only:  # score the pairs whose replies are all in the cache; never load the model
        if checker.cache is None:
            raise SystemExit("--cached-only needs --cache")
        keys = [[checker._key(r) for _, r in checker._requests(p["question"], p["a"], p["b"])] for p in pairs]
        have = checker.cache.get_many({k for ks in keys for k in ks})
        pairs = [p for p, ks in zip(pairs, keys, strict=True) if all(k in have for k in ks)]
        if not pairs:
            raise SystemExit(f"no pair has all its replies in {cache}")
        load_s = 0.0
    else:
        t0 = time.perf_counter()
        backend.load()
        load_s = time.perf_counter() - t0
    results = []
    t0 = time.perf_counter()
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        results.extend(checker.check_many([(p["question"], p["a"], p["b"]) for p in chunk]))
        for i in range(start, start + len(chunk)):
            print(f"  [{model}] {i + 1}/{len(pairs)} {results[i].verdict.value:<11} truth={pairs[i]['truth']}",
                  file=sys.stderr, flush=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    truth = [p["truth"] for p in pairs]
    votes = [r.votes for r in results]  # parse_vote: the restated answers checked (the checker's rule)
    plain = [tuple(parse_verdict(x) for x in r.replies) for r in results]  # parse_verdict alone (before)
    return {
        "model": model,
        "dtype": dtype,
        "pairs": len(pairs),
        "equivalent_pairs": sum(truth),
        "both_orders": _score(votes, truth),
        "single_order": _score([v[:1] for v in votes], truth),
        "verdict_only_both_orders": _score(plain, truth),
        "verdict_only_single_order": _score([v[:1] for v in plain], truth),
        "orders_agree": sum(r.votes[0] is r.votes[1] for r in results) / len(results),
        "unparsed_vote_rate": sum(v is Verdict.CANNOT_TELL for vs in plain for v in vs)
        / sum(len(vs) for vs in plain),
        "requests": checker.stats.backend_calls,
        "seconds_per_request": seconds / checker.stats.backend_calls if checker.stats.backend_calls else None,
        "load_seconds": load_s,
        "rows": [
            {
                "id": p["id"],
                "category": p.get("category", p["source"]),
                "truth": p["truth"],
                "verdict": r.verdict.value,
                "votes": [v.value for v in r.votes],
                "verdict_only_votes": [v.value for v in pv],
                "replies": list(r.replies),
            }  # fmt: skip
            for p, r, pv in zip(pairs, results, plain, strict=True)
        ],
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m-instruct,qwen2.5-coder-1.5b-instruct",
                    help="comma-separated local comparing models (presets or paths)")  # fmt: skip
    ap.add_argument("--n", type=int, default=None, help="pairs (balanced; default: the whole set)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1,
                    help="pairs per comparer call (both orders of each in one greedy batch; faster on a loaded "
                         "CPU, replies may differ from unbatched ones in the last bits)")  # fmt: skip
    ap.add_argument("--set", choices=tuple(SETS), default="gsm8k",
                    help="gsm8k: 40 GSM8K response pairs (tests/data); general: 114 hand-written "
                         "general-knowledge answer pairs (bench/data)")  # fmt: skip
    ap.add_argument("--pairs", type=Path, default=None, help="a pairs file instead of --set's")
    ap.add_argument(
        "--source", choices=("all", "real", "synthetic", "general"), default="all", help="which pairs to use"
    )
    ap.add_argument("--cached-only", action="store_true",
                    help="score only the pairs whose replies are all in --cache, without loading the model")  # fmt: skip
    ap.add_argument(
        "--build", action="store_true", help=f"rebuild {PAIRS_FILE.name} from the data sets and exit"
    )
    ap.add_argument("--data-dir", default=None, help="GSM8K location (else AJ_DATA_DIR)")
    ap.add_argument("--json", type=Path, default=None, help="write every result (with the replies) here")
    ap.add_argument("--cache", type=Path, default=None,
                    help="reply cache file (default: none, so timings are real); keeps the replies of an "
                         "interrupted run and lets a re-run score stored replies without the model")  # fmt: skip
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.pairs is None:
        args.pairs = PAIRS_FILE if args.build else SETS[args.set]
    if args.build:
        pairs = build_pairs(args.n, args.data_dir)
        args.pairs.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
        print(f"wrote {len(pairs)} pairs ({sum(p['truth'] for p in pairs)} equivalent) to {args.pairs}")
        return 0
    pairs = load_pairs(args.pairs, args.n, args.source)
    print(f"{len(pairs)} pairs, {sum(p['truth'] for p in pairs)} equivalent "
          f"({sum(p['source'] == 'real' for p in pairs)} from real model outputs); "
          f"{args.dtype}, {args.threads} thread(s), max {args.max_tokens} reply tokens\n")  # fmt: skip
    reports = [evaluate(m.strip(), pairs, dtype=args.dtype, max_tokens=args.max_tokens, cache=args.cache,
                        batch=args.batch, cached_only=args.cached_only)
               for m in args.models.split(",") if m.strip()]  # fmt: skip
    print(
        "| model | votes | orders | agreement % | precision % | recall % | F1 % | cannot-tell % "
        "| false equiv. (n) | false equiv. % of all | false equiv. % of non-equiv. | s/request |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    rules = (("restated answers checked", ""), ("verdict only (before)", "verdict_only_"))
    for r in reports:
        spr = "-" if r["seconds_per_request"] is None else f"{r['seconds_per_request']:.1f}"
        for rule, prefix in rules:
            for name, key in (("both", "both_orders"), ("(a, b) only", "single_order")):
                m = r[prefix + key]
                print(f"| {r['model']} | {rule} | {name} | {_pct(m['agreement'])} | {_pct(m['precision'])} "
                      f"| {_pct(m['recall'])} | {_pct(m['f1'])} | {_pct(m['cannot_tell_rate'])} "
                      f"| {m['false_equivalent']} | {_pct(m['false_equivalent_of_all'])} "
                      f"| {_pct(m['false_equivalent_of_non_equivalent'])} | {spr} |")  # fmt: skip
        print(f"\n{r['model']}: {r['pairs']} pairs ({r['equivalent_pairs']} equivalent), orders agree "
              f"{_pct(r['orders_agree'])}% (restated answers checked), unparsed votes "
              f"{_pct(r['unparsed_vote_rate'])}%")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"pairs_file": str(args.pairs), "reports": reports}, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
