"""Synthetic mined directories in the documented format (docs/formats.md), for judge tests.

The labels carry a learnable signal: ``logit = a * dt @ u + b * dd @ v - c * p_draft + bias``
(plus noise), so ``dd+dt`` beats ``dt`` and ``x`` helps. Features have non-zero
means and unequal scales so that standardisation and its folding matter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

DRAFT = {"id": "toy-draft", "config_sha256": "d" * 64, "vocab_sha256": "v" * 64, "hidden_size": 12}
TARGET = {"id": "toy-target", "config_sha256": "t" * 64, "vocab_sha256": "v" * 64, "hidden_size": 24}


def make_rows(
    n: int, h_target: int, h_draft: int, rng: np.random.Generator, *, signal: float = 1.0
) -> dict[str, np.ndarray]:
    """``n`` rows of ``dt``, ``tt``, ``dd``, ``x``, ``label``, ``draft_rank`` with a learnable signal."""
    sig_rng = np.random.default_rng(1234)  # fixed directions: the same "true" judge in every shard
    u = sig_rng.standard_normal(h_target) / np.sqrt(h_target)
    v = sig_rng.standard_normal(h_draft) / np.sqrt(h_draft)
    t_mean, t_scale = sig_rng.normal(0, 2, h_target), sig_rng.uniform(0.2, 5, h_target)
    d_mean, d_scale = sig_rng.normal(0, 2, h_draft), sig_rng.uniform(0.2, 5, h_draft)
    zt = rng.standard_normal((n, h_target))
    zd = rng.standard_normal((n, h_draft))
    p_draft = rng.beta(1.2, 3.0, n)
    logit = signal * (2.0 * zt @ u + 1.5 * zd @ v - 3.0 * p_draft) - 0.5 + 0.3 * rng.standard_normal(n)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    entropy = rng.uniform(0.1, 3.0, n)
    margin = np.clip(rng.uniform(0, 1, n) - p_draft / 2, 0, 1)
    rank = np.maximum(1, np.round(1 + 8 * (1 - p_draft) ** 3 + rng.exponential(1.0, n))).astype(np.int32)
    return {
        "dt": (zt * t_scale + t_mean).astype(np.float32),
        "tt": (rng.standard_normal((n, h_target)) * t_scale + t_mean).astype(np.float32),
        "dd": (zd * d_scale + d_mean).astype(np.float32),
        "x": np.stack([p_draft, entropy, margin], axis=1).astype(np.float32),
        "label": label,
        "draft_rank": rank,
    }


def write_shard(root: Path, index: int, tensors: dict[str, np.ndarray], rows: list[dict]) -> Path:
    """Write ``shards/shard-NNNNNN.{safetensors,jsonl}`` then the completion marker
    ``prompts/NNNNNN.json``, in the miner's order (one synthetic shard may hold several prompts)."""
    shards = root / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    stem = shards / f"shard-{index:06d}"
    save_file(tensors, str(stem) + ".safetensors")
    with open(str(stem) + ".jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    (root / "prompts").mkdir(exist_ok=True)
    n_imp = sum(int(r["label"]) for r in rows)
    marker = {"prompt_id": f"shard{index}", "index": index, "correct": True, "skipped": None, "target_forwards": 0,
              "target_tokens": 0, "seconds": 0.0, "num_labels": len(rows), "num_important": n_imp}  # fmt: skip
    (root / "prompts" / f"{index:06d}.json").write_text(json.dumps(marker), encoding="utf-8")
    return stem


def write_mined_dir(
    root: str | Path,
    *,
    n_prompts: int = 60,
    rows_per_prompt: tuple[int, int] = (4, 12),
    prompts_per_shard: int = 20,
    h_target: int = TARGET["hidden_size"],
    h_draft: int = DRAFT["hidden_size"],
    with_rank: bool = False,
    signal: float = 1.0,
    seed: int = 0,
    task: str = "toy",
) -> Path:
    """Write a complete synthetic mined directory and return its path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "autojudge-mined/1",
        "task": task,
        "split": "train",
        "draft": {**DRAFT, "hidden_size": h_draft},
        "target": {**TARGET, "hidden_size": h_target},
        "settings": {"max_new_tokens": 64, "dtype": "float32"},
        "library_version": "0.1.0",
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    rng = np.random.default_rng(seed)
    for s, start in enumerate(range(0, n_prompts, prompts_per_shard)):
        pids = list(range(start, min(n_prompts, start + prompts_per_shard)))
        counts = rng.integers(rows_per_prompt[0], rows_per_prompt[1] + 1, len(pids))
        n = int(counts.sum())
        t = make_rows(n, h_target, h_draft, rng, signal=signal)
        if not with_rank:
            t.pop("draft_rank")
        rows, i = [], 0
        for pid, c in zip(pids, counts, strict=True):
            for pos in range(int(c)):
                rows.append(
                    {
                        "prompt_id": f"p{pid}",
                        "position": 5 * pos,
                        "draft_token": 7,
                        "target_token": 9,
                        "label": int(t["label"][i]),
                        "answer_original": "1",
                        "answer_alternative": "1" if t["label"][i] == 0 else "2",
                        "correct_original": True,
                        "correct_alternative": bool(t["label"][i] == 0),
                        "timed_out": False,
                    }
                )
                i += 1
        write_shard(root, s, t, rows)
    return root
