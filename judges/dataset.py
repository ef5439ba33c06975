"""Mined data for judge training: feature sets, ``X``/``y`` matrices and the split by prompt.

The mined directory (``aj mine --out DIR``) is written and read by one module,
:mod:`autojudge.core.mining.store` (format: ``docs/formats.md``); :func:`load_mined`
reads through it (:func:`~autojudge.core.mining.store.read_mined`, which validates
everything and raises :class:`~autojudge.core.mining.store.MinedDataError`) and adds
what only judges need: feature-set names, the concatenated matrix of a feature set,
and a train/validation split that keeps each prompt on one side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from autojudge.core.judge import FEATURE_BLOCKS
from autojudge.core.mining.store import MinedArrays, read_mined

__all__ = [
    "FEATURE_SETS",
    "MinedData",
    "expand_feature_sets",
    "load_mined",
    "parse_feature_set",
    "split_by_prompt",
    "split_by_prompt_with_both_classes",
]

#: The feature sets named in ``aj train --features`` (``all`` trains each of them).
FEATURE_SETS: tuple[str, ...] = ("dt", "dt+x", "dd+dt", "dd+dt+x")


def parse_feature_set(spec: str) -> tuple[str, ...]:
    """``"dd+dt+x"`` -> ``("dd", "dt", "x")``; validates block names and duplicates.

    The order given is the order of the concatenated feature vector.
    """
    blocks = tuple(b.strip() for b in spec.split("+") if b.strip())
    if not blocks:
        raise ValueError(f"empty feature set {spec!r}")
    unknown = [b for b in blocks if b not in FEATURE_BLOCKS]
    if unknown:
        raise ValueError(
            f"unknown feature block(s) {unknown} in {spec!r}; known blocks: {list(FEATURE_BLOCKS)}"
        )
    if len(set(blocks)) != len(blocks):
        raise ValueError(f"feature set {spec!r} repeats a block")
    return blocks


def expand_feature_sets(spec: str) -> list[str]:
    """``"all"`` -> :data:`FEATURE_SETS`; ``"dt,dd+dt"`` -> both; each one validated."""
    if spec.strip() == "all":
        return list(FEATURE_SETS)
    out = []
    for s in spec.split(","):
        blocks = parse_feature_set(s)
        name = "+".join(blocks)
        if name not in out:
            out.append(name)
    return out


@dataclass
class MinedData(MinedArrays):
    """:class:`~autojudge.core.mining.store.MinedArrays` plus the judge's view: feature matrices."""

    excluded_truncated: int = 0  # truncated rows :func:`load_mined` dropped

    def block_dim(self, block: str) -> int:
        return int(self.features[block].shape[1])

    def matrix(self, blocks: Sequence[str], rows: np.ndarray | None = None) -> np.ndarray:
        """Concatenate ``blocks`` (in the given order) into one ``[N, D]`` float32 matrix."""
        missing = [b for b in blocks if b not in self.features]
        if missing:
            raise KeyError(f"blocks {missing} were not loaded; loaded: {sorted(self.features)}")
        parts = [self.features[b] if rows is None else self.features[b][rows] for b in blocks]
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def load_mined(
    path: str | Path,
    blocks: Sequence[str] = ("dt", "dd", "x"),
    *,
    skip_incomplete: bool = False,
    keep_truncated: bool = False,
    include_unfinished: bool = False,
) -> MinedData:
    """Load the ``blocks`` of every finished prompt of a mined directory (through the store).

    ``include_unfinished`` adds the final labels of prompts still being mined (``partial/``).
    Rows whose rollout hit its token budget (``truncated``: the missing answer says nothing
    about the swap) are dropped unless ``keep_truncated``; ``excluded_truncated`` counts them.

    Raises :class:`~autojudge.core.mining.store.MinedDataError` naming the offending file for any problem (see
    :meth:`autojudge.core.mining.store.MinedStore.read_arrays`); shards of unfinished
    prompts are an error unless ``skip_incomplete``.
    """
    arrays = read_mined(path, blocks, skip_incomplete=skip_incomplete, include_unfinished=include_unfinished)
    dropped = 0
    if not keep_truncated:
        arrays, dropped = arrays.without_truncated()
    data = MinedData(**{f.name: getattr(arrays, f.name) for f in fields(arrays)})
    data.excluded_truncated = dropped
    return data


def split_by_prompt(
    prompt_ids: np.ndarray, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, val)`` with every prompt's rows on one side only.

    Prompts (not rows) are shuffled with ``seed`` and the first ones, until at
    least ``val_fraction`` of the prompts, go to validation. Needs >= 2 prompts.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    uniq = np.array(sorted(set(prompt_ids.tolist())), dtype=object)
    if len(uniq) < 2:
        raise ValueError("a split by prompt needs at least 2 distinct prompts")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    n_val = min(len(uniq) - 1, max(1, int(round(val_fraction * len(uniq)))))
    val_prompts = set(uniq[order[:n_val]].tolist())
    is_val = np.fromiter((p in val_prompts for p in prompt_ids), dtype=bool, count=len(prompt_ids))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def split_by_prompt_with_both_classes(
    prompt_ids: np.ndarray, labels: np.ndarray, val_fraction: float = 0.2, seed: int = 0, tries: int = 64
) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`split_by_prompt` whose two sides each hold both label classes: ``(train, val, seed_used)``.

    Tries ``seed``, ``seed + 1``, ... (deterministic) and returns the first split
    where training and validation rows both contain important and unimportant
    mismatches; with few prompts a random grouping often puts a single class on
    one side. Raises ``ValueError`` when no tried split works (e.g. every important
    mismatch comes from one prompt), naming what to mine more of.
    """
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("the mined rows hold a single class; need both important and unimportant mismatches")
    for s in range(seed, seed + tries):
        train, val = split_by_prompt(prompt_ids, val_fraction, s)
        if len(np.unique(labels[train])) == 2 and len(np.unique(labels[val])) == 2:
            return train, val, s
    n_prompts = len(set(np.asarray(prompt_ids).tolist()))
    raise ValueError(
        f"no split of the {n_prompts} prompts by prompt puts both important and unimportant mismatches on "
        f"both sides (tried {tries} seeds): mine more prompts"
    )
