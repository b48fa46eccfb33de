"""A study's reports: reports/study/NAME.json (the aggregate, as synth2.study.workflow.collect builds it),
NAME.md (the tables: mean ± half-width of the 95% t-interval; paired differences) and NAME.png (per-seed
points with the mean and its interval, for the headline test metrics)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synth2.io import atomic_path, write_json
from synth2.study.plan import REPORTS
from synth2.study.stats import SUBSETS, VARIANTS

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
    for configuration in report["configurations"]:
        summary, differences = configuration["summary"], configuration["differences"]
        metrics = [(k, h) for k, h in HEADLINE if k in summary["test"]["baseline"]["overall"]]
        lines += [f"## {configuration['label']}", "", f"Overrides: `{json.dumps(configuration['overrides'])}`", ""]
        for split in ("test", "val"):
            lines += [f"**{split}**", "", "| variant | subset | " + " | ".join(h for _, h in metrics) + " |"]
            lines.append("|---|---|" + "---:|" * len(metrics))
            for variant in VARIANTS:
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
            "| difference | subset | metric | mean | t-interval | bootstrap | relative |",
            "|---|---|---|---:|---|---|---:|",
        ]
        for label in differences:
            for subset in SUBSETS:
                for key, heading in metrics:
                    entry = differences[label]["test"].get(subset, {}).get(key)
                    if entry:
                        lines.append(f"| {label} | {subset} | {heading} | " + _difference_cells(entry) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(report: Mapping[str, Any], path: Path) -> None:
    """Per-seed points and the mean with its interval, per variant, for the headline test metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("overall", "cider", "CIDEr, overall"), ("unseen", "attr_colour_shape", "colour+shape, unseen")]
    configurations = report["configurations"]
    fig, axes = plt.subplots(
        len(configurations), len(panels), figsize=(5 * len(panels), 3.2 * len(configurations)), squeeze=False
    )
    for row, configuration in enumerate(configurations):
        summary = configuration["summary"]["test"]
        for col, (subset, metric, title) in enumerate(panels):
            ax = axes[row][col]
            for x, variant in enumerate(VARIANTS):
                entry = summary[variant].get(subset, {}).get(metric)
                if not entry:
                    continue
                ax.scatter([x] * len(entry["values"]), entry["values"], color="grey", s=14, zorder=2)
                low, high = entry["ci95"]
                error = [[entry["mean"] - low], [high - entry["mean"]]]
                ax.errorbar(x, entry["mean"], yerr=error, fmt="o", color="C0", capsize=6, zorder=3)
            ax.set_xticks(range(len(VARIANTS)), VARIANTS)
            ax.set_title(f"{configuration['label']}: {title} (test)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_reports(report: Mapping[str, Any], root: Path) -> dict[str, Path]:
    """Write NAME.json, NAME.md and NAME.png under reports/study/ of `root`; their paths by suffix."""
    directory = root / REPORTS
    outputs = {suffix: directory / f"{report['name']}.{suffix}" for suffix in ("json", "md", "png")}
    write_json(report, outputs["json"])
    with atomic_path(outputs["md"]) as tmp:
        tmp.write_text(markdown(report) + "\n")
    plot(report, outputs["png"])
    return outputs
