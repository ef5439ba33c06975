"""Writing a run's report: ``summary.json``, ``report.md`` and PNG plots (matplotlib, Agg backend).

Input: the summary dict of :func:`build_summary` (what ``summary.json`` holds: models,
settings, per-mode aggregates from :func:`autojudge.core.run.evaluate.aggregate_modes`,
the validation choice, mining and training records, stage timings), which the
``report`` stage of :mod:`autojudge.core.run.stages` fills. Outputs in the run directory:

* ``summary.json``: the summary as strict JSON (non-finite numbers -> ``null``);
* ``report.md``: settings, the trade-off table, the validation choice, stage timings;
* ``plots/accuracy_vs_acceptance.png``: accuracy vs tokens per cycle
  (``mean_acceptance_length``), the paper's Figure-3 style: the judge's thresholds
  as one curve and Top-K as another, both starting at lossless SD (threshold 0
  and K = 1 accept nothing), target-only and lossless SD as points;
* ``plots/tokens_per_s.png``: tokens/s per mode (bars, speed-up vs target-only).

Limits: plots show point estimates only (no error bars); with a handful of
prompts the accuracy axis is coarse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autojudge.core.files import atomic_write_json

SUMMARY_FORMAT = "autojudge-run/1"
SUMMARY_FILE = "summary.json"
PLOTS = ("accuracy_vs_acceptance.png", "tokens_per_s.png")


def build_summary(
    *,
    task: str,
    metric: str,
    draft: Mapping[str, Any],
    target: Mapping[str, Any],
    dtype: str,
    settings: Mapping[str, Any],
    eval_split: str,
    modes: Sequence[Any],
    rows: Mapping[str, Sequence[Mapping[str, Any]]],
    aggregates: Mapping[str, Any],
    selection: Mapping[str, Any],
    mining: Mapping[str, Any],
    training: Mapping[str, Any],
    stages: Mapping[str, Any],
    samples_dir: str = "eval",
) -> dict[str, Any]:
    """The content of ``summary.json`` (before :func:`write_report` adds ``plots``); keys in this order.

    ``modes``: the evaluated :class:`~autojudge.core.run.evaluate.ModeSpec` s in report order;
    ``rows`` / ``aggregates``: per mode name; ``selection``: ``validation/selection.json``
    (its per-mode aggregates are left out); ``draft``/``target``: model fingerprints;
    ``stages``: per upstream stage ``{hash, seconds, finished}`` from ``state.json``.
    """
    return {
        "format": SUMMARY_FORMAT,
        "task": task,
        "metric": metric,  # e.g. pass@1 for the code tasks
        "draft": draft,
        "target": target,
        "dtype": dtype,
        "settings": settings,
        "eval_split": eval_split,
        "eval_prompt_ids": [r["prompt_id"] for r in rows[modes[0].name]],
        "recommended_threshold": selection["recommended_threshold"],
        "recommended_mode": selection["recommended_mode"],
        "calibrated_threshold": selection["calibrated_threshold"],
        "validation": {k: v for k, v in selection.items() if k != "modes"},
        "mining": mining,
        "training": training,
        "modes": aggregates,
        "mode_order": [m.name for m in modes],
        "samples": {m.name: str(Path(samples_dir) / f"{m.file_stem}.jsonl") for m in modes},
        "stages": stages,
        "timing": timing_note(rows, aggregates),
    }


def timing_note(
    rows: Mapping[str, Sequence[Mapping[str, Any]]], aggregates: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Whether the wall-clock figures compare like for like: ``summary.json``'s ``timing``.

    ``sittings``: the distinct sittings of the evaluation rows (None: rows that record none);
    ``one_sitting``: all rows were decoded back to back in one known sitting;
    ``cross_sitting_speedups``: the modes whose speed-up vs ``ar`` or ``sd`` compares rows of
    different (or unknown) sittings: those are flagged in ``report.md``.
    """
    from autojudge.core.run.evaluate import row_sittings

    sittings = row_sittings(r for rs in rows.values() for r in rs)
    flagged = sorted(
        name
        for name, a in aggregates.items()
        if a.get("speedup_vs_ar_same_sitting") is False or a.get("speedup_vs_sd_same_sitting") is False
    )
    one = len(sittings) == 1 and sittings[0] is not None
    note = (
        "every evaluation row was decoded in one sitting: wall-clock speed-ups compare like for like"
        if one
        else "the evaluation rows come from several sittings (a resumed run, or rows that record no sitting): "
        "speed-ups of the modes in cross_sitting_speedups compare rows timed under different conditions "
        "and are not a like-for-like measurement; re-run without --resume in a new --out for comparable timings"
    )
    return {"sittings": sittings, "one_sitting": one, "cross_sitting_speedups": flagged, "note": note}


def read_summary(root: str | Path) -> dict[str, Any]:
    """``ROOT/summary.json`` as written by :func:`write_report`."""
    return json.loads((Path(root) / SUMMARY_FILE).read_text())


def _save(fig, path: str | Path) -> Path:
    """Lay out, write and close ``fig``; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(x: Any, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def setting_of(agg: Mapping[str, Any]) -> str:
    if agg.get("kind") == "judge":
        return f"T = {agg['threshold']:.4g}"
    if agg.get("kind") == "topk":
        return f"K = {agg['top_k']}"
    return ""


def _speedup(a: Mapping[str, Any], vs: str) -> str:
    """A speed-up cell; ``†`` marks one computed across sittings (not like for like)."""
    cell = _fmt(a.get(f"speedup_vs_{vs}"))
    return cell + " †" if cell != "-" and a.get(f"speedup_vs_{vs}_same_sitting") is False else cell


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The trade-off table: one row per mode in ``mode_order``; ``†`` flags cross-sitting speed-ups."""
    head = (
        "| mode | setting | accuracy % [95% CI] | Δ vs target-only (pts) [95% CI] | flips +/- | same output as AR "
        "| tokens/cycle | draft acc. rate | tokens/s | speed-up vs AR | vs SD | judge-accepted |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rec = summary.get("recommended_mode")
    rows = []
    for name in summary["mode_order"]:
        a = summary["modes"][name]
        label = f"**{name}** (recommended)" if name == rec else name
        ci = a.get("accuracy_ci95")
        ci_s = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
        pc = a.get("paired_vs_ar") or {}
        dci = pc.get("ci95_points")
        dci_s = f" [{dci[0]:+.1f}, {dci[1]:+.1f}]" if dci and name != "ar" else ""
        flips = f"+{pc['gained']}/-{pc['lost']}" if pc.get("n") and name != "ar" else "-"
        same = a.get("identical_output_vs_ar")
        same_s = f"{100 * same:.0f}%" if same is not None and name != "ar" else "-"
        rows.append(
            f"| {label} | {setting_of(a)} | {_fmt(100 * a['accuracy'], '.1f')} ({a['correct']}/{a['n']}){ci_s} "
            f"| {_fmt(a.get('accuracy_delta_points'), '+.1f')}{dci_s} | {flips} | {same_s} | {_fmt(a['mean_acceptance_length'])} "
            f"| {_fmt(a['draft_acceptance_rate'])} | {_fmt(a['tokens_per_s'])} | {_speedup(a, 'ar')} "
            f"| {_speedup(a, 'sd')} | {a['num_judge_accepted']} |"
        )
    return head + "\n".join(rows) + "\n"


def _speed_line(summary: Mapping[str, Any]) -> str:
    """What tokens/s means in this report: throughput at the eval batch size, or batch-1 latency."""
    sizes = sorted({b for a in summary["modes"].values() for b in a.get("batch_sizes", [1])})
    if max(sizes, default=1) <= 1:
        return "- tokens/s: batch 1 (one problem at a time: per-problem latency)"
    return (
        f"- tokens/s: **throughput** at eval batch {'/'.join(map(str, sizes))} (problems decoded together; "
        "tokens / summed batch wall time), not the per-problem latency of batch 1 (`--eval-batch 1`)"
    )


def markdown_report(summary: Mapping[str, Any]) -> str:
    s = summary["settings"]
    v = summary["validation"]
    lines = [
        f"# autojudge run: {summary['task']}",
        "",
        f"- draft `{summary['draft']['id']}`, target `{summary['target']['id']}`, dtype {summary['dtype']}",
        (
            f"- judge labels: from the {summary['training']['source']} ({summary['training'].get('n_labels') or '?'} "
            "labelled mismatches, mined before this run); nothing mined in this run; "
            if summary["training"].get("source")
            else f"- mined {summary['mining'].get('prompts', '?')} prompts of the mining split "
            f"({summary['mining'].get('labels', '?')} labelled mismatches, {summary['mining'].get('important', '?')} important) "
            "in this run; "
        )
        + f"validation: {len(v['prompt_ids'])} held-out prompt(s) "
        f"of the mining split; evaluation: {len(summary['eval_prompt_ids'])} prompts of `{summary['eval_split']}`",
        f"- k = {s['k']} draft tokens per cycle, max {s['max_new_tokens']} new tokens, greedy",
        _speed_line(summary),
        (
            f"- **no judge**: {summary['training'].get('reason', 'not trained')}"
            if summary["calibrated_threshold"] is None
            else f"- judge: {summary['training'].get('chosen', '?')}, validation ROC-AUC "
            f"{_fmt(summary['training'].get('val_auc'), '.3f')}, calibrated threshold "
            f"{summary['calibrated_threshold']:.4g} (recall {s['target_recall']:g} of important mismatches)"
            + (
                ""
                if summary["training"].get("split", {}).get("held_out", True)
                else " — IN-SAMPLE: too few mined prompts for a held-out split, so the AUC and the calibration are optimistic"
            )
        ),
        (
            "- **recommended: lossless SD** (no judge)"
            if summary["calibrated_threshold"] is None
            else f"- **recommended threshold {summary['recommended_threshold']:.4g}** ({summary['recommended_mode']}): "
            + (
                "the judge's calibrated threshold, NOT checked on validation prompts (--val-limit 0)"
                if v.get("unchecked")
                else f"the most aggressive candidate within {v['max_accuracy_drop_points']:g} accuracy point(s) of "
                "target-only on validation"
                + ("" if v["within_budget"] else " — none was within budget, so lossless SD is recommended")
            )
        ),
        "",
        "## Accuracy / speed trade-off (evaluation split)",
        "",
        "tokens/cycle = `mean_acceptance_length` (accepted draft tokens + the target's token per verification "
        "cycle; 1.0 for target-only). Speed-ups are wall-clock tokens/s ratios on this machine."
        + (
            f" accuracy = **{summary['metric']}** (the task's own measure)."
            if summary.get("metric") not in (None, "accuracy")
            else ""
        ),
        "",
        markdown_table(summary),
        *(
            []
            if summary.get("timing", {}).get("one_sitting", True)
            else [
                "**† not like for like**: " + summary["timing"]["note"] + ".",
                "",
            ]
        ),
        "![accuracy vs tokens per cycle](plots/accuracy_vs_acceptance.png)",
        "",
        "![tokens per second](plots/tokens_per_s.png)",
        "",
        "## Threshold choice (validation prompts only)",
        "",
        "no judge, nothing to choose: validation was not decoded"
        if summary["calibrated_threshold"] is None
        else "no validation prompts (--val-limit 0): the calibrated threshold is used as it is"
        if v.get("unchecked")
        else f"target-only accuracy {_fmt(100 * v['reference_accuracy'], '.1f')}%",
        "",
    ]
    if v["candidates"]:
        lines.append("| threshold | accuracy % | Δ (pts) | within budget |\n|---:|---:|---:|---|")
    for c in v["candidates"]:
        lines.append(
            f"| {c['threshold']:.4g} | {_fmt(100 * c['accuracy'], '.1f')} | {_fmt(c['delta_points'], '+.1f')} "
            f"| {'yes' if c['within_budget'] else 'no'} |"
        )
    lines += ["", "## Stages", "", "| stage | seconds | finished |", "|---|---:|---|"]
    for name, st in summary["stages"].items():
        lines.append(f"| {name} | {_fmt(st.get('seconds'), '.1f')} | {st.get('finished', '-')} |")
    lines += ["", "Per-sample rows: " + ", ".join(f"`{p}`" for p in summary["samples"].values()), ""]
    return "\n".join(lines)


def _curve(summary: Mapping[str, Any], kind: str) -> list[tuple[float, float, str]]:
    """Points (tokens/cycle, accuracy %, label) of one family, starting at lossless SD."""
    modes = summary["modes"]
    pts = []
    if "sd" in modes:
        pts.append(
            (
                modes["sd"]["mean_acceptance_length"],
                100 * modes["sd"]["accuracy"],
                "0" if kind == "judge" else "1",
            )
        )
    fam = [a for a in modes.values() if a.get("kind") == kind]
    fam.sort(key=lambda a: a["threshold"] if kind == "judge" else a["top_k"])
    for a in fam:
        label = f"{a['threshold']:.3g}" if kind == "judge" else str(a["top_k"])
        pts.append((a["mean_acceptance_length"], 100 * a["accuracy"], label))
    return pts


def plot_tradeoff(summary: Mapping[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = summary["modes"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for kind, style, name in (
        ("judge", "o-", "AutoJudge (threshold T)"),
        ("topk", "s--", "Top-K baseline (K)"),
    ):
        pts = _curve(summary, kind)
        if len(pts) > (1 if "sd" in modes else 0):
            xs, ys, labels = zip(*pts, strict=True)
            line = ax.plot(xs, ys, style, label=name, alpha=0.85)[0]
            fam = [a for a in modes.values() if a.get("kind") == kind and a.get("accuracy_ci95")]
            if fam:  # 95% Wilson intervals of each point's accuracy
                ax.errorbar([a["mean_acceptance_length"] for a in fam], [100 * a["accuracy"] for a in fam],
                            yerr=[[100 * (a["accuracy"] - a["accuracy_ci95"][0]) for a in fam],
                                  [100 * (a["accuracy_ci95"][1] - a["accuracy"]) for a in fam]],
                            fmt="none", ecolor=line.get_color(), alpha=0.5, capsize=3)  # fmt: skip
            merged: dict[tuple[float, float], list[str]] = {}  # coinciding points share one label
            for x, y, lab in pts[1:] if "sd" in modes else pts:
                merged.setdefault((round(x, 6), round(y, 6)), []).append(lab)
            prefix = "T=" if kind == "judge" else "K="
            for (x, y), labs in merged.items():
                offset = (4, 5) if kind == "judge" else (4, -11)  # judge labels above, Top-K below
                ax.annotate(prefix + ", ".join(labs), (x, y), textcoords="offset points", xytext=offset,
                            fontsize=7, color=line.get_color())  # fmt: skip
    for name, marker, color, label in (
        ("ar", "D", "black", "target only"),
        ("sd", "*", "tab:green", "lossless SD"),
    ):
        if name in modes:
            a = modes[name]
            ax.plot(
                [a["mean_acceptance_length"]],
                [100 * a["accuracy"]],
                marker,
                color=color,
                ms=11,
                label=label,
                zorder=5,
            )
            if a.get("accuracy_ci95"):
                lo_ci, hi_ci = a["accuracy_ci95"]
                ax.errorbar([a["mean_acceptance_length"]], [100 * a["accuracy"]],
                            yerr=[[100 * (a["accuracy"] - lo_ci)], [100 * (hi_ci - a["accuracy"])]],
                            fmt="none", ecolor=color, alpha=0.5, capsize=3)  # fmt: skip
    rec = summary.get("recommended_mode")
    if rec in modes and rec not in ("ar", "sd"):
        a = modes[rec]
        ax.plot([a["mean_acceptance_length"]], [100 * a["accuracy"]], "o", ms=16, mfc="none", mec="red", mew=2,
                label=f"recommended ({rec})", zorder=6)  # fmt: skip
    n = next(iter(modes.values()))["n"] if modes else 0
    ax.set_xlabel("accepted tokens per cycle (mean_acceptance_length)")
    ax.set_ylabel(f"accuracy % (n = {n}; bars: 95% Wilson intervals)")
    ax.set_title(f"{summary['task']}: accuracy vs accepted tokens per cycle")
    ax.grid(alpha=0.3)
    ys = [100 * a["accuracy"] for a in modes.values()]
    if ys:
        lo, hi = min(ys), max(ys)
        pad = max(5.0, 0.1 * (hi - lo))
        bottom, top = max(-1.5, lo - pad), min(101.5, hi + pad)
        ax.set_ylim(bottom, top)
        ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= 100])  # no impossible accuracies on the axis
        ax.set_ylim(bottom, top)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_speed(summary: Mapping[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = summary["mode_order"]
    modes = summary["modes"]
    colors = {"ar": "black", "sd": "tab:green", "judge": "tab:blue", "topk": "tab:orange"}
    vals = [modes[m]["tokens_per_s"] for m in order]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(order) + 2), 4), dpi=120)
    bars = ax.bar(range(len(order)), vals, color=[colors.get(modes[m]["kind"], "gray") for m in order])
    for i, (b, m) in enumerate(zip(bars, order, strict=True)):
        sp = modes[m].get("speedup_vs_ar")
        txt = f"{vals[i]:.2f}" + (f"\n{sp:.2f}x" if sp else "")
        ax.annotate(txt, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7,
                    xytext=(0, 2), textcoords="offset points")  # fmt: skip
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("output tokens / s (wall clock)")
    ax.set_title(f"{summary['task']}: decoding speed per mode (label: tok/s, speed-up vs target only)")
    ax.title.set_fontsize(9)
    ax.set_ylim(0, max(vals, default=1) * 1.25 or 1)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def write_report(root: str | Path, summary: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``summary.json``, ``report.md`` and the plots under ``root``; returns their paths."""
    root = Path(root)
    summary = _jsonable(dict(summary))
    summary["plots"] = {p.split(".")[0]: f"plots/{p}" for p in PLOTS}
    out = {
        "tradeoff": plot_tradeoff(summary, root / "plots" / PLOTS[0]),
        "speed": plot_speed(summary, root / "plots" / PLOTS[1]),
    }
    md = root / "report.md"
    tmp = md.with_name(".report.md.tmp")
    tmp.write_text(markdown_report(summary), encoding="utf-8")
    tmp.replace(md)
    atomic_write_json(root / SUMMARY_FILE, summary)
    out["markdown"], out["summary"] = md, root / SUMMARY_FILE
    return out
