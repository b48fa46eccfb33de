"""Colour x shape heatmaps of colour+shape accuracy on the test images: what the synthetic pairs fix.

The human pairs are Zipf-skewed over colour-shape combinations and hold some out entirely; a VLM trained
on them alone names rare and held-out combinations badly. One panel per variant shows where, held-out
cells hatched. Drawn from one run's `reports/evaluate/per_image.parquet` (which carries each image's
colour, shape and seen flag), so the pipeline's page and a study's report draw the same picture. One run
only: the held-out combinations are drawn per seed, so averaging seeds would blur exactly what it shows.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from synth2.world.scenes import COLOURS, SHAPES


def colour_shape_accuracy(per_image: pd.DataFrame, variants: Sequence[str]) -> dict[str, Any]:
    """JSON-ready grids (rows: colours, columns: shapes) of one run's test images: `held_out` per cell and
    per variant the mean colour+shape accuracy (None for a cell without test images)."""
    rows = per_image[(per_image["split"] == "test") & (per_image["subset"] == "overall")]
    missing = {"colour", "shape", "seen"} - set(rows.columns)
    if missing:
        raise ValueError(f"per-image scores lack {sorted(missing)}: written before evaluate recorded them")
    order = {"index": list(COLOURS), "columns": list(SHAPES)}

    def grid(frame: pd.DataFrame, values: pd.Series) -> pd.DataFrame:
        return values.groupby([frame["colour"], frame["shape"]]).mean().unstack().reindex(**order)

    first = rows[rows["variant"] == variants[0]]
    held_out = grid(first, ~first["seen"].astype(bool)) > 0
    accuracy = {}
    for variant in variants:
        frame = rows[rows["variant"] == variant]
        if frame.empty:
            raise ValueError(f"no test rows of variant '{variant}' in the per-image scores")
        values = grid(frame, frame["attr_colour_shape"]).to_numpy(dtype=float)
        accuracy[variant] = [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in values]
    return {
        "colours": list(COLOURS),
        "shapes": list(SHAPES),
        "held_out": held_out.to_numpy().tolist(),
        "accuracy": accuracy,
    }


def heatmap_png(rows: Mapping[str, Mapping[str, Any]], title: str) -> bytes:
    """One row of panels per entry of `rows` (label -> colour_shape_accuracy's grids), one panel per variant,
    all on one colour scale (0..1), values in the cells, held-out cells hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = max(len(grids["accuracy"]) for grids in rows.values())
    size = (3.3 * n_cols + 1.0, 3.4 * len(rows) + 0.4)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=size, squeeze=False, layout="constrained")
    image = None
    for r, (label, grids) in enumerate(rows.items()):
        held_out = np.asarray(grids["held_out"], dtype=bool)
        for c, (variant, grid) in enumerate(grids["accuracy"].items()):
            ax = axes[r][c]
            values = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
            image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
            ax.set_xticks(range(len(grids["shapes"])), grids["shapes"], rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(len(grids["colours"])), grids["colours"], fontsize=7)
            unseen = np.nanmean(values[held_out]) if held_out.any() else float("nan")
            prefix = f"{label}: " if label else ""
            ax.set_title(f"{prefix}{variant}\nmean {np.nanmean(values):.2f}, held out {unseen:.2f}", fontsize=8)
            for (i, j), value in np.ndenumerate(values):
                if held_out[i, j]:
                    ax.add_patch(
                        plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="0.85", lw=0)
                    )
                if not np.isnan(value):
                    colour = "black" if value > 0.6 and not held_out[i, j] else "white"
                    box = {"boxstyle": "square,pad=0.1", "fc": "none" if not held_out[i, j] else "0.3", "lw": 0}
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color=colour, bbox=box)
        for ax in axes[r][len(grids["accuracy"]) :]:
            ax.axis("off")
    fig.suptitle(f"{title}; hatched: combinations held out of the human pairs", fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="colour+shape accuracy (test)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})  # no version stamp: same bytes
    plt.close(fig)
    return buffer.getvalue()
