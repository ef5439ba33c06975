"""Checks the commands run BEFORE loading models: a user error costs no model loading and no traceback.

Each raises a :class:`click.ClickException` (or :class:`click.BadParameter`) with one clear message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def check_judge_option(spec: str, threshold: float | None = None) -> dict[str, Any] | None:
    """``--judge`` (and ``--threshold``): the kind parses, or the artifact exists and reads (header, checksum).

    The fingerprints are checked later, against the loaded models. Returns the artifact's metadata
    (None for a registered kind such as ``topk:4``).
    """
    from autojudge.judges.artifact import JudgeArtifactError
    from autojudge.judges.spec import JudgeSpecError, check_judge_spec

    try:
        return check_judge_spec(spec, threshold=threshold)
    except (JudgeSpecError, JudgeArtifactError) as e:
        raise click.BadParameter(str(e), param_hint="'--judge'") from None


def check_split_data(task: Any, split: str, data_dir: str | Path | None, option: str = "'--split'") -> None:
    """The task's ``split`` exists and its data file is found (reads one example)."""
    from autojudge.core.data import DatasetNotFoundError

    try:
        task.load(split, data_dir=data_dir, limit=1)
    except DatasetNotFoundError as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:  # e.g. a split the task does not have
        raise click.BadParameter(str(e), param_hint=option) from None
