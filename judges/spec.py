"""Turn a judge specification string (command line, config) into a :class:`~autojudge.core.judge.Judge`.

Forms: a registered judge kind (``never`` (lossless), ``always``, ``topk:K``, ``prob:P``,
or a plugin's ``mykind:ARG``; see ``register_judges`` in docs/plugins.md), the path
of a judge artifact written by ``aj train``, or the name of a judge shipped in the
package (``gsm8k``; ``aj judges list``, :mod:`autojudge.judges.shipped`). Artifacts are
checked against the models in use. This
is the one place that resolves a user's ``--judge`` string; backends receive the
resulting judge (or its :meth:`~autojudge.core.judge.Judge.describe` description).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autojudge.core.judge import Judge
from autojudge.plugins.manager import judge_from_spec, judge_spec_forms

#: the forms of the built-in judge kinds (plugins may add more: ``judge_spec_forms()``)
BASELINE_FORMS = ("never", "always", "topk:K", "prob:P")


class JudgeSpecError(ValueError):
    """A ``--judge`` string names no usable judge (bad argument, no such file); the message says why."""


def artifact_path(spec: str) -> Path | None:
    """The artifact ``spec`` names: an existing file, else a shipped judge's file; None for neither."""
    path = Path(spec)
    if path.is_file():
        return path
    from autojudge.judges.shipped import find_shipped

    shipped = find_shipped(spec)
    return shipped.path if shipped is not None else None


def unknown_judge_message(spec: str) -> str:
    from autojudge.judges.shipped import shipped_names

    names = shipped_names()
    shipped = (
        f"a shipped judge ({', '.join(names)}; `aj judges list`)"
        if names
        else "a shipped judge (none installed)"
    )
    return f"judge {spec!r} is neither a baseline ({', '.join(judge_spec_forms())}), {shipped}, nor an existing file"


def check_judge_spec(spec: str, *, threshold: float | None = None) -> dict[str, Any] | None:
    """Check a ``--judge`` string (and ``--threshold``) WITHOUT the models, before they load.

    A registered kind is parsed (``topk:abc`` fails here); an artifact path must exist and its
    header, format, tensors and checksum must be sound (:func:`~autojudge.judges.artifact.load_judge`
    without fingerprints; those are checked by :func:`load_judge_spec` once the models are loaded).
    Returns the artifact's metadata, or None for a registered kind. Raises :class:`JudgeSpecError`
    or :class:`~autojudge.judges.artifact.JudgeArtifactError`.
    """
    try:
        judge = parse_baseline(spec)
    except (ValueError, TypeError) as e:
        raise JudgeSpecError(str(e)) from None
    if judge is not None:
        if threshold is not None:
            raise JudgeSpecError("--threshold applies to trained judge artifacts, not to baseline judges")
        return None
    path = artifact_path(spec)
    if path is None:
        raise JudgeSpecError(unknown_judge_message(spec))
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise JudgeSpecError(f"--threshold must be in [0, 1], got {threshold}")
    from autojudge.judges.artifact import load_judge

    return load_judge(path, threshold=threshold)[1]


def parse_baseline(spec: str) -> Judge | None:
    """The judge a registered kind names in ``spec``, or None when ``spec`` names no kind."""
    return judge_from_spec(spec)


def _fingerprint(model: Any) -> Mapping[str, Any] | None:
    """A ``LoadedModel``'s fingerprint, or a fingerprint dict as it is (e.g. ``VLLMEngine.fingerprints()``)."""
    if model is None or isinstance(model, Mapping):
        return model
    return model.fingerprint()


def load_judge_spec(
    spec: str,
    *,
    target: Any | None = None,
    draft: Any | None = None,
    threshold: float | None = None,
    device: str = "cpu",
) -> Judge:
    """A registered judge kind, or a trained judge artifact checked against ``target``/``draft``.

    ``target``/``draft``: ``LoadedModel`` objects or their fingerprint dicts.
    """
    judge = parse_baseline(spec)
    if judge is not None:
        if threshold is not None:
            raise ValueError("--threshold applies to trained judge artifacts, not to baseline judges")
        return judge
    path = artifact_path(spec)
    if path is None:
        raise FileNotFoundError(unknown_judge_message(spec))
    from autojudge.judges.artifact import load_judge

    judge, _meta = load_judge(
        path,
        target_fingerprint=_fingerprint(target),
        draft_fingerprint=_fingerprint(draft),
        threshold=threshold,
        device=device,
    )
    return judge
