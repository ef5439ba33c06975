"""The paper's Figure 3 from `aj run` directories: accuracy against accepted tokens per cycle.

Each RUN_DIR is a finished `aj run` (its `summary.json`), typically the same task and problems at
two draft lengths, e.g. (issue 18, resumable: rerun the same command to continue)::

    aj run --task gsm8k --judge gsm8k --eval-limit 300 -k 16 --thresholds 0.02,0.1,0.2 \\
        --top-k 2,4 --out runs/fig3-gsm8k-k16
    aj run --task gsm8k --judge gsm8k --eval-limit 300 -k 5 --thresholds 0.02,0.1,0.2 \\
        --top-k 2,4 --out runs/fig3-gsm8k-k5
    python bench/figure3.py runs/fig3-gsm8k-k16 runs/fig3-gsm8k-k5 --png docs/img/fig3-gsm8k.png

It prints (and with ``--md`` writes) one table over all runs: per mode the accuracy with its 95%
Wilson interval, the paired change against target-only (95% interval, problems gained/lost),
tokens per cycle and its ratio to lossless SD at the same k, and throughput. Below it, the
issue's goal per run: the judge's best tokens per cycle within ``--max-drop`` points of
target-only (paired point estimate) as a multiple of lossless SD's, and whether it beats Top-K
at equal accuracy (the best Top-K tokens per cycle among Top-K points at least as accurate) and
at equal tokens per cycle: its accuracy against the Top-K line, the straight segments from
lossless SD (Top-K at K = 1) through the Top-K points in order of tokens per cycle (a point on a
segment is what mixing the two modes over problems would give), as a margin in points.
The plot draws one colour per run (k): the judge's curve, Top-K's, lossless SD and target-only,
with the accuracy intervals as error bars.

Limits: reads only `summary.json` (run `aj run` again to refresh it); runs of different tasks or
problem sets may be mixed, and the table says which is which, but their points are not comparable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def load_run(path: Path) -> dict[str, Any]:
    """A run directory's ``summary.json`` (or the file itself), with its directory recorded."""
    f = path / "summary.json" if path.is_dir() else path
    if not f.is_file():
        raise SystemExit(f"{path}: no summary.json (is it a finished `aj run` directory?)")
    s = json.loads(f.read_text())
    s["_dir"] = str(path)
    return s


def _family(s: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    fam = [a for a in s["modes"].values() if a.get("kind") == kind]
    return sorted(fam, key=lambda a: a["threshold"] if kind == "judge" else a["top_k"])


def goal(s: Mapping[str, Any], max_drop: float = 1.0) -> dict[str, Any]:
    """The issue's goal for one run: the judge's best tokens/cycle within ``max_drop`` points of target-only
    (paired point estimate) over lossless SD's, and the judge against Top-K at equal accuracy."""
    modes = s["modes"]
    sd = modes.get("sd", {}).get("mean_acceptance_length")
    ok = [a for a in _family(s, "judge") if (a.get("accuracy_delta_points") or 0.0) >= -max_drop - 1e-9]
    best = max(ok, key=lambda a: a["mean_acceptance_length"], default=None)
    topk = _family(s, "topk")
    versus = []
    for a in _family(s, "judge"):
        rivals = [t for t in topk if t["accuracy"] >= a["accuracy"] - 1e-12]
        rival = max(rivals, key=lambda t: t["mean_acceptance_length"], default=None)
        versus.append(
            {
                "judge": a["name"],
                "accuracy": a["accuracy"],
                "tokens_per_cycle": a["mean_acceptance_length"],
                "topk": rival["name"] if rival else None,
                "topk_tokens_per_cycle": rival["mean_acceptance_length"] if rival else None,
                "judge_ahead": None
                if rival is None
                else a["mean_acceptance_length"] > rival["mean_acceptance_length"],
            }
        )
    line = [(modes["sd"]["mean_acceptance_length"], modes["sd"]["accuracy"])] if "sd" in modes else []
    line += [(t["mean_acceptance_length"], t["accuracy"]) for t in topk]
    for v in versus:
        at = topk_line_accuracy(line, v["tokens_per_cycle"])
        v["topk_line_accuracy"] = at
        v["margin_vs_topk_line_points"] = None if at is None else 100.0 * (v["accuracy"] - at)
    return {
        "k": s["settings"]["k"],
        "sd_tokens_per_cycle": sd,
        "best_within_budget": best["name"] if best else None,
        "ratio_vs_sd": (best["mean_acceptance_length"] / sd) if best and sd else None,
        "versus_topk": versus,
    }


def topk_line_accuracy(points: Sequence[tuple[float, float]], tokens_per_cycle: float) -> float | None:
    """Accuracy on the piecewise-linear curve through ``points`` ((tokens per cycle, accuracy): lossless
    SD and the Top-K points) at ``tokens_per_cycle``; None outside the points' range (no extrapolation).
    Points are sorted by tokens per cycle first."""
    pts = sorted(points)
    if not pts or not pts[0][0] <= tokens_per_cycle <= pts[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
        if x0 <= tokens_per_cycle <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (tokens_per_cycle - x0) / (x1 - x0)
    return pts[0][1]  # a single point, or tokens_per_cycle equal to the only x


def _ci(a: Mapping[str, Any]) -> str:
    ci = a.get("accuracy_ci95")
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""


def table(runs: Sequence[Mapping[str, Any]]) -> str:
    """One Markdown table over every run's modes (rows grouped by run)."""
    lines = [
        "| run | k | mode | accuracy % [95% CI] | Δ vs target-only (pts) [95% CI] | gained/lost | tokens/cycle "
        "| × lossless SD | tokens/s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in runs:
        sd = s["modes"].get("sd", {}).get("mean_acceptance_length")
        for name in s.get("mode_order") or list(s["modes"]):
            a = s["modes"][name]
            p = a.get("paired_vs_ar") or {}
            pci = p.get("ci95_points")
            delta = (
                "+0.0"
                if name == "ar"
                else f"{p.get('delta_points', 0.0):+.1f}"
                + (f" [{pci[0]:+.1f}, {pci[1]:+.1f}]" if pci else "")
            )
            flips = "-" if name == "ar" else f"+{p.get('gained', 0)}/-{p.get('lost', 0)}"
            ratio = f"{a['mean_acceptance_length'] / sd:.2f}" if sd else "-"
            lines.append(
                f"| {Path(s['_dir']).name} | {s['settings']['k']} | {name} | {100 * a['accuracy']:.1f} "
                f"({a['correct']}/{a['n']}) {_ci(a)} | {delta} | {flips} | {a['mean_acceptance_length']:.2f} "
                f"| {ratio} | {a.get('tokens_per_s', 0.0):.2f} |"
            )
    return "\n".join(lines)


def goal_lines(runs: Sequence[Mapping[str, Any]], max_drop: float) -> list[str]:
    out = []
    for s in runs:
        g = goal(s, max_drop)
        head = (
            f"- `{Path(s['_dir']).name}` (k = {g['k']}, {s['task']}, {len(s['eval_prompt_ids'])} problems): "
        )
        if g["best_within_budget"] is None:
            out.append(head + f"no judge threshold within {max_drop:g} point(s) of target-only")
        else:
            out.append(
                head + f"best judge within {max_drop:g} point(s): {g['best_within_budget']}, "
                f"{g['ratio_vs_sd']:.2f}x lossless SD's tokens per cycle"
            )
        for v in g["versus_topk"]:
            if v["margin_vs_topk_line_points"] is not None:
                out.append(
                    f"  - {v['judge']} ({100 * v['accuracy']:.1f}% at {v['tokens_per_cycle']:.2f} tokens/cycle): "
                    f"{v['margin_vs_topk_line_points']:+.1f} points against the Top-K line there "
                    f"({100 * v['topk_line_accuracy']:.1f}%)"
                )
            if v["topk"] is not None:
                out.append(
                    f"  - {v['judge']} ({100 * v['accuracy']:.1f}%): {v['tokens_per_cycle']:.2f} tokens/cycle vs "
                    f"{v['topk']} at least as accurate: {v['topk_tokens_per_cycle']:.2f} "
                    f"({'judge ahead' if v['judge_ahead'] else 'Top-K ahead'})"
                )
    return out


def plot(runs: Sequence[Mapping[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(runs):
        c, k = colors[i % len(colors)], s["settings"]["k"]
        modes = s["modes"]
        sd = modes.get("sd")
        for kind, style, label in (("judge", "o-", "AutoJudge"), ("topk", "s--", "Top-K")):
            fam = _family(s, kind)
            pts = ([sd] if sd else []) + fam
            if not fam:
                continue
            xs = [a["mean_acceptance_length"] for a in pts]
            ys = [100 * a["accuracy"] for a in pts]
            ax.plot(xs, ys, style, color=c, alpha=0.85, label=f"{label}, k={k}")
            withci = [a for a in fam if a.get("accuracy_ci95")]
            ax.errorbar([a["mean_acceptance_length"] for a in withci], [100 * a["accuracy"] for a in withci],
                        yerr=[[100 * (a["accuracy"] - a["accuracy_ci95"][0]) for a in withci],
                              [100 * (a["accuracy_ci95"][1] - a["accuracy"]) for a in withci]],
                        fmt="none", ecolor=c, alpha=0.4, capsize=3)  # fmt: skip
        if sd:
            ax.plot([sd["mean_acceptance_length"]], [100 * sd["accuracy"]], "*", color=c, ms=12,
                    label=f"lossless SD, k={k}")  # fmt: skip
        if "ar" in modes:
            ax.axhline(
                100 * modes["ar"]["accuracy"],
                color=c,
                lw=0.8,
                ls=":",
                label=f"target only ({Path(s['_dir']).name})",
            )
    ax.set_xlabel("accepted tokens per cycle")
    ax.set_ylabel("accuracy %")
    ax.set_title("accuracy vs accepted tokens per cycle (95% intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "runs", nargs="+", type=Path, help="finished `aj run` directories (or their summary.json)"
    )
    ap.add_argument("--png", type=Path, default=None, help="write the plot here")
    ap.add_argument("--md", type=Path, default=None, help="write the table and the goal lines here")
    ap.add_argument("--max-drop", type=float, default=1.0, help="accuracy budget in points for the goal line")
    args = ap.parse_args(argv)
    runs = [load_run(p) for p in args.runs]
    text = "\n".join([table(runs), "", *goal_lines(runs, args.max_drop), ""])
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
    if args.png:
        print(f"plot: {plot(runs, args.png)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
