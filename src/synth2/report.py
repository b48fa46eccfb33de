"""The pipeline run's report: one self-contained HTML page a person reads (images embedded).

Metrics of every VLM variant (test, and validation where the champion was chosen), the champion, the
training curves, diversity of the captions before and after balancing, the synthetic contact sheet with
its captions written out in full, example captions per variant, and the data-quality gates (each gate's
verdict and failures, linked to its own page, synth2.gate_page). Built from the stages' DVC outputs
only (no timestamps), so the same outputs give the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from synth2 import gate_page, paths
from synth2.io import read_json
from synth2.pipeline import GATES, VARIANT_NAMES

CURVES = {
    "caption LM": paths.CAPTION_LM_LOSS,
    "image encoder": paths.IMAGE_ENCODER_LOSS,
    "prior": paths.PRIOR_LOSS,
    **{f"VLM {v}": paths.vlm_loss(v) for v in VARIANT_NAMES},
}
DIVERSITY_ROWS = (
    ("n", "captions"),
    ("unique_ratio", "unique"),
    ("concept_entropy", "concept entropy (bits)"),
    ("concepts_covered", "concepts covered"),
    ("max_min_concept_ratio", "max/min concept count"),
    ("mean_pairwise_distance", "mean pairwise distance (MiniLM)"),
    ("clusters_covered", "clusters covered"),
)
STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}ol li{margin:2px 0}"
    "table.text td,table.text th{text-align:left}"
)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    attribute = f' class="{css}"' if css else ""
    return f"<table{attribute}><tr>{head}</tr>{body}</table>"


def _png(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _image(path: Path) -> str:
    if not path.exists():
        return "<p>(not produced in this profile)</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _curves_png() -> bytes:
    """The training curves in a grid, three per row, each with its title and labelled axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: pd.read_csv(path) for name, path in CURVES.items() if path.exists()}
    curves = {name: frame for name, frame in curves.items() if len(frame)}
    cols = min(3, max(1, len(curves)))
    rows = max(1, -(-len(curves) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, layout="constrained")
    for ax, (name, frame) in zip(axes.ravel(), curves.items()):
        ax.plot(frame["step"], frame["loss"])
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
    for ax in axes.ravel()[len(curves) :]:
        ax.axis("off")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})  # no version stamp: same bytes
    plt.close(fig)
    return buffer.getvalue()


def _metrics_section(evaluation: Mapping[str, Any], columns: Iterable[tuple[str, str]]) -> str:
    columns = list(columns)
    parts = []
    for split in ("test", "val"):
        rows = [
            [variant, subset, *(values.get(key, "n/a") for key, _ in columns)]
            for variant in VARIANT_NAMES
            for subset, values in evaluation[split][variant].items()
        ]
        parts.append(f"<h3>{split}</h3>" + _table(["variant", "subset", *(h for _, h in columns)], rows))
    gains = evaluation.get("gain_over_baseline", {}).get("test", {})
    if gains:
        keys = [
            (f"{subset}.{key}", f"{subset} {heading}") for subset in ("overall", "unseen") for key, heading in columns
        ]
        keys = [(k, h) for k, h in keys if any(k in g for g in gains.values())]
        # None: the baseline scored 0, so no relative gain exists (evaluate.relative_gains).
        rows = [
            [variant, *(f"{g[k]:+.1%}" if g.get(k) is not None else "n/a" for k, _ in keys)]
            for variant, g in gains.items()
        ]
        parts.append(
            "<h3>gain over the baseline (test, relative)</h3>" + _table(["variant", *(h for _, h in keys)], rows)
        )
    champion = evaluation.get("champion")
    if champion:
        parts.append(
            f"<p>Champion (chosen on validation): <b>{html.escape(champion['variant'])}</b> by "
            f"{html.escape(champion['metric'])} = {champion['value']:.3f}, {champion['margin']:.3f} ahead of the "
            "runner-up.</p>"
        )
    return "".join(parts)


def _diversity_section(diversity: Mapping[str, Any]) -> str:
    sets = [name for name in ("prompted_raw", "balanced", "unbalanced") if name in diversity]
    rows = [[label, *(diversity[s].get(key) for s in sets)] for key, label in DIVERSITY_ROWS]
    return _table(["", *sets], rows)


def _gates_section() -> str:
    """Per gate: its verdict, what it checked, its failures with their examples, and a link to its page."""
    rows, failures = [], []
    for gate in GATES:
        report = _json(paths.gate_report(gate), None)
        if report is None:
            rows.append([gate, "not run", "", "", "", ""])
            continue
        summary = gate_page.summary(report)
        page = os.path.relpath(paths.gate_page(gate), paths.REPORT.parent)
        rows.append(
            [
                gate,
                "passed" if summary.success else "FAILED",
                ", ".join(summary.tables),
                summary.expectations,
                summary.failed,
                f'<a href="{html.escape(page)}">{html.escape(page)}</a>',
            ]
        )
        failures += [f"{gate}: {failure}" for failure in summary.failures]
    head = "".join(f"<th>{h}</th>" for h in ("gate", "result", "tables", "expectations", "failed", "page"))
    # Cells are escaped here, not by _table: the page cell is a link.
    body = "".join(
        "<tr>" + "".join(f"<td>{c if i == 5 else _cell(c)}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    listed = "<ol>" + "".join(f"<li>{html.escape(f)}</li>" for f in failures) + "</ol>" if failures else ""
    return f'<table class="text"><tr>{head}</tr>{body}</table>' + (f"<h3>Failures</h3>{listed}" if listed else "")


def _markdown_table(path: Path) -> str:
    """A Markdown table written by a stage (| a | b |) as HTML."""
    if not path.exists():
        return "<p>(not produced)</p>"
    lines = [line for line in path.read_text().splitlines() if line.startswith("|") and "---" not in line]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return _table(rows[0], rows[1:], css="text") if rows else ""


def _json(path: Path, missing: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else missing


def build_report(result_columns: Iterable[tuple[str, str]], title: str, figures: Mapping[str, bytes]) -> str:
    """The page; `figures`: the profile's own figures (heading -> PNG), after the metrics."""
    evaluation = read_json(paths.EVAL_METRICS)
    diversity = _json(paths.DIVERSITY_REPORT, {})
    sheet_captions = _json(paths.SYNTHETIC_SHEET_CAPTIONS, [])
    curves = base64.b64encode(_curves_png()).decode()
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Captioning metrics</h2>",
        _metrics_section(evaluation, result_columns),
        *(f"<h2>{html.escape(h)}</h2>" + _png(png, h) for h, png in figures.items()),
        "<h2>Training curves</h2>",
        f'<img alt="training curves" src="data:image/png;base64,{curves}">',
        "<h2>Diversity of the synthetic captions</h2>",
        _diversity_section(diversity) if diversity else "<p>(no diversity report)</p>",
        "<h2>Synthetic image embeddings, decoded</h2>",
        _image(paths.SYNTHETIC_SHEET),
        "<ol>" + "".join(f"<li>{html.escape(c)}</li>" for c in sheet_captions) + "</ol>",
        "<h2>Example captions (test)</h2>",
        _markdown_table(paths.EVAL_EXAMPLES),
        "<h2>Data-quality gates (Great Expectations)</h2>",
        "<p>Each gate validated its stage's data before the next stage ran; its page shows every expectation, "
        "what was observed and the unexpected values.</p>",
        _gates_section(),
    ]
    body = "\n".join(sections)
    head = f'<meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style>'
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>\n"
