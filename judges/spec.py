"""Turn a judge specification string (command line, config) into a :class:`~autojudge.core.judge.Judge`.

Forms: ``never`` (lossless), ``always``, ``topk:K``, ``prob:P``, or the path of a
judge artifact written by ``aj train`` (checked against the models in use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autojudge.core.judge import AlwaysAccept, Judge, NeverAccept, ProbThresholdJudge, TopKJudge

BASELINE_FORMS = ("never", "always", "topk:K", "prob:P")


def parse_baseline(spec: str) -> Judge | None:
    """The baseline judge named by ``spec``, or None when ``spec`` names no baseline."""
    s = spec.strip().lower()
    if s == "never":
        return NeverAccept()
    if s == "always":
        return AlwaysAccept()
    kind, sep, arg = s.partition(":")
    if not sep or kind not in ("topk", "prob"):
        return None
    try:
        return TopKJudge(int(arg)) if kind == "topk" else ProbThresholdJudge(float(arg))
    except ValueError as e:
        raise ValueError(f"bad judge spec {spec!r}: {e}") from e


def load_judge_spec(
    spec: str,
    *,
    target: Any | None = None,
    draft: Any | None = None,
    threshold: float | None = None,
    device: str = "cpu",
) -> Judge:
    """A baseline judge, or a trained judge artifact checked against ``target``/``draft`` (``LoadedModel``)."""
    judge = parse_baseline(spec)
    if judge is not None:
        if threshold is not None:
            raise ValueError("--threshold applies to trained judge artifacts, not to baseline judges")
        return judge
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"judge {spec!r} is neither a baseline ({', '.join(BASELINE_FORMS)}) nor an existing file"
        )
    from autojudge.judges.artifact import load_judge

    judge, _meta = load_judge(
        path,
        target_fingerprint=target.fingerprint() if target is not None else None,
        draft_fingerprint=draft.fingerprint() if draft is not None else None,
        threshold=threshold,
        device=device,
    )
    return judge
