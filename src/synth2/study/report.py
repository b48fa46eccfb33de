"""A study's reports: reports/study/NAME.json (the aggregate, as synth2.study.workflow.collect builds it),
NAME.md (the tables: mean ± half-width of the 95% t-interval; paired differences) and NAME.png (per-seed
points with the mean and its interval, for the headline test metrics). A sweep of the human pairs adds
its data-efficiency answer (synth2.study.savings): a section leading NAME.md and NAME.efficiency.png,
metric vs human pairs with both curves and their bands. A report without a sweep (or written before
sweeps existed) has neither; any other sweep adds each value against the first, per variant it changed
(synth2.study.stats.sweep_differences). On the world, NAME.heatmap.png: per configuration, the colour x shape
accuracy of each variant for the study's first seed (synth2.world.heatmap)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synth2.io import atomic_path, write_json
from synth2.study.plan import REPORTS
from synth2.study.stats import SUBSETS
from synth2.world.heatmap import heatmap_png

EFFICIENCY_LABELS = {"overall.cider": "overall CIDEr", "unseen.attr_colour_shape": "unseen colour+shape"}
HEADLINE = (
    ("attr_colour_shape", "colour+shape"),
    ("attr_all", "all attributes"),
    ("cider", "CIDEr"),
    ("bleu4", "BLEU-4"),
)


def _cell(entry: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not entry:
        return "n/a"
    low, high = entry["ci95"]
    return f"{entry['mean']:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def _difference_cells(entry: Mapping[str, Any]) -> str:
    low, high = entry["ci95"]
    boot = entry.get("bootstrap_ci95")
    relative = entry["relative_to_minus"]
    return " | ".join(
        [
            f"{entry['mean']:+.3f}",
            f"[{low:+.3f}, {high:+.3f}]",
            f"[{boot[0]:+.3f}, {boot[1]:+.3f}]" if boot else "n/a",
            f"{relative:+.1%}" if relative is not None else "n/a",
        ]
    )


def markdown(report: Mapping[str, Any]) -> str:
    lines = [
        f"# Study `{report['name']}`",
        "",
        f"Seeds {', '.join(map(str, report['seeds']))}; commit `{report['commit'][:10]}`; "
        f"{report['wall_seconds'] / 60:.1f} min. Cells: mean ± half-width of the 95% t-interval over seeds.",
        "",
    ]
    sweep = report.get("sweep")
    if sweep:
        values = ", ".join(map(str, sweep["values"]))
        lines += [f"Sweep: `{sweep['key']}` = {values}, every value with every seed (paired by seed).", ""]
    if report.get("savings"):
        lines += efficiency_markdown(report["savings"])
    if any(c.get("colour_shape") for c in report["configurations"]):
        lines += [
            f"What the synthetic pairs fix, per colour × shape combination (test, first seed; hatched: held out "
            f"of the human pairs): `{report['name']}.heatmap.png`.",
            "",
        ]
    for configuration in report["configurations"]:
        lines += speed_markdown(configuration)
        summary, differences = configuration["summary"], configuration["differences"]
        metrics = [(k, h) for k, h in HEADLINE if k in summary["test"]["baseline"]["overall"]]
        lines += [f"## {configuration['label']}", "", f"Overrides: `{json.dumps(configuration['overrides'])}`", ""]
        for split in ("test", "val"):
            lines += [f"**{split}**", "", "| variant | subset | " + " | ".join(h for _, h in metrics) + " |"]
            lines.append("|---|---|" + "---:|" * len(metrics))
            for variant in summary[split]:  # evaluate's variants, then any self-improvement round
                for subset in SUBSETS:
                    values = summary[split][variant].get(subset)
                    if values:
                        cells = " | ".join(_cell(values.get(k)) for k, _ in metrics)
                        lines.append(f"| {variant} | {subset} | {cells} |")
            lines.append("")
        lines += [
            "**Paired differences (test)**: mean, 95% t-interval over seeds, 95% bootstrap interval over seeds "
            "and images; relative: the mean difference over the second variant's mean.",
            "",
        ]
        lines += difference_table(differences, metrics)
        if configuration.get("rounds"):
            lines += rounds_markdown(configuration["rounds"])
    if report.get("sweep_differences"):
        lines += sweep_markdown(report["sweep_differences"], report["sweep"]["key"])
    return "\n".join(lines)


def sweep_markdown(differences: Mapping[str, Any], key: str) -> list[str]:
    """Each later value of the sweep against the first, per variant it changed, paired by seed (test)."""
    lines = [
        f"## Between the values of `{key}`",
        "",
        "Each value against the first, paired by seed, for every variant the sweep changed (test): mean, 95% "
        "t-interval over seeds, 95% bootstrap interval over seeds and images, relative to the first value's mean.",
        "",
    ]
    return lines + difference_table(differences, HEADLINE)


def difference_table(differences: Mapping[str, Any], metrics) -> list[str]:
    """The test split's paired differences, a row per difference, subset and (key, heading) metric."""
    lines = [
        "| difference | subset | metric | mean | t-interval | bootstrap | relative |",
        "|---|---|---|---:|---|---|---:|",
    ]
    for label, entry in differences.items():
        for subset in SUBSETS:
            for key, heading in metrics:
                cell = entry["test"].get(subset, {}).get(key)
                if cell:
                    lines.append(f"| {label} | {subset} | {heading} | " + _difference_cells(cell) + " |")
    return [*lines, ""]


def speed_markdown(configuration: Mapping[str, Any]) -> list[str]:
    """The embedding/pixel speed of a configuration's experiments with the pixel path (none: no lines)."""
    speed = configuration.get("pixel_speed")
    if not speed:
        return []
    if not speed["experiments"]:
        return [
            f"**Embedding vs pixel space ({configuration['label']})**: no timing in MLflow for these experiments "
            "(pixel_synthesize was restored from DVC's run-cache, or tracking was off).",
            "",
        ]
    ratio = speed["pixel_over_embedding_time"]
    return [
        f"**Embedding vs pixel space ({configuration['label']})**, measured by pixel_synthesize in "
        f"{len(speed['experiments'])} experiment(s) on {speed['captions']} captions each (read from MLflow: "
        "timings are no DVC output): pixel-path time / embedding-path time "
        f"{_cell(ratio, 2)} (above 1: embedding space is faster; the paper: 1.33). Captions/s: "
        f"embedding {_cell(speed['embedding_captions_per_s'], 1)}, pixel {_cell(speed['pixel_captions_per_s'], 1)}; "
        f"decoder {speed['decoder_parameters']} parameters, {speed['decoder_steps']} DDIM steps.",
        "",
    ]


ROUND_HEADINGS = {
    "pool.kept_share": "kept share",
    "pool.accuracy_captioned.attr_colour_shape": "colour+shape, captioned",
    "pool.accuracy_kept.attr_colour_shape": "colour+shape, kept",
    "diversity.previous.distinct_2": "distinct-2, previous VLM",
    "diversity.this.distinct_2": "distinct-2, this VLM",
    "diversity.previous.concept_entropy": "concept entropy, previous VLM",
    "diversity.this.concept_entropy": "concept entropy, this VLM",
    "diversity.dropped.previous.distinct_2": "distinct-2, previous VLM, dropped rows",
    "diversity.dropped.this.distinct_2": "distinct-2, this VLM, dropped rows",
    "diversity.dropped.previous.concept_entropy": "concept entropy, previous VLM, dropped rows",
    "diversity.dropped.this.concept_entropy": "concept entropy, this VLM, dropped rows",
}


def rounds_markdown(rounds: Mapping[str, Any]) -> list[str]:
    """Per self-improvement round: the pseudo-captions' kept share and accuracy (the world's ground truth,
    for the report only) and the caption diversity of the previous and this round's VLM on the pool."""
    lines = [
        "**Self-improvement rounds (pool)**: mean ± half-width of the 95% t-interval over seeds; accuracy against "
        "the world's ground truth, which the filter never reads.",
        "",
        "| round | captioned by | " + " | ".join(ROUND_HEADINGS.values()) + " |",
        "|---|---|" + "---:|" * len(ROUND_HEADINGS),
    ]
    for variant, figures in rounds["figures"].items():
        cells = " | ".join(_cell(figures.get(key)) for key in ROUND_HEADINGS)
        lines.append(f"| {variant} | {rounds['chain'][variant]} | {cells} |")
    return [*lines, ""]


def _interval(values: list[float | None], digits: int = 2) -> str:
    return "[" + ", ".join("n/a" if v is None else f"{v:.{digits}f}" for v in values) + "]"


def efficiency_markdown(savings: Mapping[str, Any]) -> list[str]:
    """The data-efficiency section: the savings factor per metric, then the curves and gains per size."""
    full = next(iter(savings.values()))["full_size"]
    lines = [
        "## Data efficiency (test)",
        "",
        f"How many human pairs synth needs to match the baseline trained on all {full:g}: the first crossing "
        "of the full-data baseline's mean by synth's mean curve, interpolated on log N between the swept sizes; "
        "savings factor = full size ÷ that size, with a 95% paired bootstrap interval over seeds.",
        "",
        "| metric | full-data baseline | synth matches it at | savings factor | 95% interval | note |",
        "|---|---:|---:|---:|---|---|",
    ]
    for key, entry in savings.items():
        matched = "n/a" if entry["matched_at"] is None else f"{entry['matched_at']:.0f}"
        if entry["bound"]:
            matched = f"≤ {matched}"
        factor = "n/a" if entry["factor"] is None else f"{'≥ ' if entry['bound'] else ''}{entry['factor']:.2f}"
        lines.append(
            f"| {EFFICIENCY_LABELS.get(key, key)} | {entry['target']:.3f} | {matched} | {factor} | "
            f"{_interval(entry['ci95'])} | {entry['note']} |"
        )
    lines.append("")
    for key, entry in savings.items():
        label = EFFICIENCY_LABELS.get(key, key)
        lines += [
            f"**{label} by human pairs**: mean ± half-width of the 95% t-interval; gain synth − baseline paired "
            "by seed, its 95% t-interval, relative to the baseline's mean.",
            "",
            "| human pairs | baseline | synth | gain | t-interval | relative | relative interval |",
            "|---:|---:|---:|---:|---|---:|---|",
        ]
        for row in entry["per_size"]:
            gain = row["gain"]
            relative = "n/a" if gain["relative"] is None else f"{gain['relative']:+.1%}"
            relative_ci = (
                "n/a"
                if gain["relative_ci95"] is None
                else "[" + ", ".join(f"{v:+.1%}" for v in gain["relative_ci95"]) + "]"
            )
            lines.append(
                f"| {row['size']} | {_cell(row['baseline'])} | {_cell(row['synth'])} | {gain['mean']:+.3f} | "
                f"[{gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f}] | {relative} | {relative_ci} |"
            )
        reached = entry["paper_relative_gain"]["reached_at"]
        threshold = entry["paper_relative_gain"]["threshold"]
        lines += [
            "",
            f"Relative gain ≥ +{threshold:.0%} (the paper's) at: {', '.join(map(str, reached)) or 'no swept size'}; "
            f"largest gain at {entry['largest_gain_at']} human pairs (relative: {entry['largest_relative_gain_at']}).",
            "",
        ]
    return lines


def plot_efficiency(savings: Mapping[str, Any], path: Path) -> None:
    """Metric vs human pairs (log x): baseline and synth means with their 95% t-interval bands, the
    full-data baseline as a dotted line and the matched size, one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(savings), figsize=(5.2 * len(savings), 3.8), squeeze=False)
    for ax, (key, entry) in zip(axes[0], savings.items(), strict=True):
        sizes = [row["size"] for row in entry["per_size"]]
        for variant, colour in (("baseline", "C0"), ("synth", "C1")):
            means = [row[variant]["mean"] for row in entry["per_size"]]
            low = [row[variant]["ci95"][0] for row in entry["per_size"]]
            high = [row[variant]["ci95"][1] for row in entry["per_size"]]
            ax.plot(sizes, means, "o-", color=colour, label=f"{variant} (mean)")
            ax.fill_between(sizes, low, high, color=colour, alpha=0.2, label=f"{variant} 95% interval")
        ax.axhline(entry["target"], color="grey", linestyle=":", label=f"baseline at {entry['full_size']:g} pairs")
        if entry["matched_at"] is not None and not entry["bound"]:
            ax.axvline(
                entry["matched_at"],
                color="C1",
                linestyle="--",
                linewidth=0.8,
                label=f"synth matches it at {entry['matched_at']:.0f}",
            )
        factor = "not matched" if entry["factor"] is None else f"{'≥ ' if entry['bound'] else ''}{entry['factor']:.2f}×"
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("human pairs (log scale)")
        ax.set_ylabel(EFFICIENCY_LABELS.get(key, key))
        ax.set_title(f"{EFFICIENCY_LABELS.get(key, key)} (test): savings {factor}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot(report: Mapping[str, Any], path: Path) -> None:
    """Per-seed points and the mean with its interval, per variant, for the headline test metrics; one row
    per configuration, titled with its label (its overrides), labelled axes and a legend."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("overall", "cider", "CIDEr, overall"), ("unseen", "attr_colour_shape", "colour+shape, unseen")]
    configurations = report["configurations"]
    fig, axes = plt.subplots(
        len(configurations),
        len(panels),
        figsize=(5.2 * len(panels), 3.4 * len(configurations) + 0.4),
        squeeze=False,
        layout="constrained",
    )
    for row, configuration in enumerate(configurations):
        summary = configuration["summary"]["test"]
        label = "\n".join(textwrap.wrap(configuration["label"], 70))
        for col, (subset, metric, title) in enumerate(panels):
            ax = axes[row][col]
            variants = list(summary)  # evaluate's variants, then any self-improvement round
            for x, variant in enumerate(variants):
                entry = summary[variant].get(subset, {}).get(metric)
                if not entry:
                    continue
                ax.scatter([x] * len(entry["values"]), entry["values"], color="grey", s=14, zorder=2, label="one seed")
                low, high = entry["ci95"]
                error = [[entry["mean"] - low], [high - entry["mean"]]]
                ax.errorbar(
                    x, entry["mean"], yerr=error, fmt="o", color="C0", capsize=6, zorder=3, label="mean, 95% t-interval"
                )
            ax.set_xticks(range(len(variants)), variants)
            ax.set_xlim(-0.5, len(variants) - 0.5)
            ax.set_xlabel("variant")
            ax.set_ylabel(f"{title} (test)")
            ax.set_title(f"{label}\n{title}", fontsize=9)
            handles, names = ax.get_legend_handles_labels()
            unique = dict(zip(names, handles))
            if row == 0 and col == 0 and unique:
                ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
    fig.suptitle(f"study {report['name']}: seeds {', '.join(map(str, report['seeds']))}", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_reports(report: Mapping[str, Any], root: Path) -> dict[str, Path]:
    """Write NAME.json, NAME.md and NAME.png under reports/study/ of `root` (and NAME.efficiency.png for a
    sweep of the human pairs); their paths by suffix."""
    directory = root / REPORTS
    heatmaps = {
        f"{c['label']} (seed {c['colour_shape']['seed']})": c["colour_shape"]
        for c in report["configurations"]
        if c.get("colour_shape")
    }
    suffixes = ("json", "md", "png") + (("efficiency.png",) if report.get("savings") else ())
    suffixes += ("heatmap.png",) if heatmaps else ()
    outputs = {suffix: directory / f"{report['name']}.{suffix}" for suffix in suffixes}
    write_json(report, outputs["json"])
    with atomic_path(outputs["md"]) as tmp:
        tmp.write_text(markdown(report) + "\n")
    plot(report, outputs["png"])
    if report.get("savings"):
        plot_efficiency(report["savings"], outputs["efficiency.png"])
    if heatmaps:
        with atomic_path(outputs["heatmap.png"]) as tmp:
            tmp.write_bytes(heatmap_png(heatmaps, f"study {report['name']}: colour+shape accuracy per combination"))
    return outputs
