"""Great Expectations data-quality gates between stages.

Each gate turns its inputs into pandas frames (one per table, plus derived columns such as word counts
or embedding norms), validates each frame against a suite built here in code with thresholds from
`params.gates`, and writes the whole validation result to `reports/gates/<gate>.json` and, for people, a
page of it to `reports/gates/<gate>.html` (synth2.gate_page: every expectation in GX's words, what was
observed, the unexpected values and offending rows). A failed gate
raises `GateError` (`GateResult.error()`: its stage, synth2.stages.gate, raises it after recording the
result in MLflow), one line naming every failed expectation with a few offending rows, so `dvc repro`
and the Prefect flow stop before anything downstream runs.

Gates (synth2.pipeline.GATES): `pool` and `real` (the prepared tables; the profile's hooks define them),
`captions` (raw LM samples), `balanced` (the balanced selection), `synthetic` (synthesised image
embeddings against the real ones). Reports and
pages hold what was validated and found, never when: they are DVC outs, and a timestamp would make
dvc.lock differ from run to run.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from synth2 import gate_page, paths
from synth2.errors import Synth2Error
from synth2.io import atomic_path, landing_now, read_parquet, read_tensors, write_json
from synth2.params import GateParams

log = logging.getLogger("synth2")

# A caption is made of words and ordinary punctuation; LM garbage (markup, control characters, runs of
# symbols) is not.
CAPTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ,.;:'!?()\-]*$"
N_SAMPLES = 3  # offending rows in the one-line error
N_PAGE_ROWS = 20  # offending rows on the gate's page (as many as GX lists unexpected values)


class GateError(Synth2Error):
    """A data-quality gate failed."""


@dataclass
class Table:
    """One frame to validate, its expectations, and the columns that identify an offending row."""

    name: str
    frame: pd.DataFrame
    expectations: list[Any]
    show: list[str] = field(default_factory=list)


@dataclass
class GateResult:
    gate: str
    success: bool
    report: dict[str, Any]
    failures: list[str]
    # {table: {expectation index: offending rows}}, for the page: the report keeps GX's row indices only
    offending_rows: dict[str, dict[int, list[dict[str, Any]]]] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        """What the gate's stage records in MLflow."""
        return {"gate": {"success": int(self.success), "failed_expectations": len(self.failures)}}

    def error(self) -> GateError:
        """The one-line failure of a failed gate: every failed expectation, and where the report is."""
        return GateError(
            f"gate '{self.gate}' failed {len(self.failures)} expectation(s): "
            + "; ".join(self.failures)
            + f" (see {paths.gate_page(self.gate)})"
        )


# ------------------------------------------------------------------------------------ validation


def expectations():
    """great_expectations.expectations, imported on first use (GX costs seconds to import)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations.expectations as gxe

    return gxe


def validate(gate: str, tables: list[Table], thresholds: dict[str, Any] | None = None) -> GateResult:
    """Validate every table with GX (ephemeral context: nothing written to disk by GX itself)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    started = time.perf_counter()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(f"gate_{gate}")
    report: dict[str, Any] = {"gate": gate, "thresholds": thresholds or {}, "tables": {}}
    failures: list[str] = []
    offending: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for table in tables:
        suite = gx.ExpectationSuite(name=f"{gate}.{table.name}", expectations=table.expectations)
        batch = (
            source.add_dataframe_asset(table.name)
            .add_batch_definition_whole_dataframe("all")
            .get_batch(batch_parameters={"dataframe": table.frame})
        )
        result = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20})
        report["tables"][table.name] = _clean(_without_load_time(result.to_json_dict()))
        failures += [_describe(table, r) for r in result.results if not r.success]
        offending[table.name] = {
            i: rows for i, r in enumerate(result.results) if (rows := _offending_rows(table, r, N_PAGE_ROWS))
        }
    report["success"] = not failures
    report["failures"] = failures
    log.info(
        "gate %s: %d tables, %d failed expectations in %.2f s",
        gate,
        len(tables),
        len(failures),
        time.perf_counter() - started,
    )
    return GateResult(gate, not failures, report, failures, offending)


def _describe(table: Table, result: Any) -> str:
    """`table: expectation(column, bounds): what was seen, e.g. offending rows`."""
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in {"batch_id", "column"} and v is not None}
    column = config.kwargs.get("column")
    args = ", ".join([*([column] if column else []), *(f"{k}={_short(v)}" for k, v in kwargs.items())])
    res = result.result or {}
    if result.exception_info and result.exception_info.get("raised_exception"):
        seen = f"raised {result.exception_info.get('exception_message')}"
    elif "unexpected_count" in res:
        seen = f"{res['unexpected_count']} of {res.get('element_count')} rows unexpected"
        sample = _offending_rows(table, result, N_SAMPLES)
        if sample:
            seen += ", e.g. " + " | ".join(" ".join(f"{k}={_short(v)}" for k, v in row.items()) for row in sample)
        elif res.get("partial_unexpected_list"):
            seen += ", e.g. " + ", ".join(_short(v) for v in res["partial_unexpected_list"][:N_SAMPLES])
    else:
        seen = f"observed {_short(res.get('observed_value'))}"
        if column and column in table.frame and config.type.startswith("expect_column_proportion_of_unique"):
            top = table.frame[column].value_counts().head(N_SAMPLES)
            seen += ", most repeated: " + ", ".join(f"{_short(v)}×{n}" for v, n in top.items())
    return f"{table.name}: {config.type}({args}): {seen}"


def _offending_rows(table: Table, result: Any, limit: int) -> list[dict[str, Any]]:
    """The first `limit` rows GX found unexpected, in the columns that identify a row."""
    rows = (result.result or {}).get("partial_unexpected_index_list") or []
    if not rows or not table.show:
        return []
    sample = table.frame.loc[rows[:limit], [c for c in table.show if c in table.frame]]
    return [
        {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()} for row in sample.to_dict("records")
    ]


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple, set)) and len(value) > 6:
        value = [*list(value)[:6], "…"]
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _without_load_time(result: dict[str, Any]) -> dict[str, Any]:
    """GX stamps each batch with the time it was loaded: drop it, keep the data fingerprint."""
    result.get("meta", {}).get("batch_markers", {}).pop("ge_load_time", None)
    return result


def _clean(value: Any) -> Any:
    """JSON without NaN/inf (GX reports carry NaN offending values)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


# ------------------------------------------------------------------------------------- the gates


def _words(captions: pd.Series) -> pd.Series:
    return captions.fillna("").astype(str).str.split().str.len()


def concepts_table() -> Table:
    """The concepts the caption LM is prompted with: present and unique (both profiles)."""
    gxe = expectations()
    concepts = read_parquet(paths.CONCEPTS)
    exps = [gxe.ExpectColumnValuesToNotBeNull(column="concept"), gxe.ExpectColumnValuesToBeUnique(column="concept")]
    return Table("concepts", concepts, exps, ["concept"])


def caption_tables(g: GateParams) -> list[Table]:
    """Raw LM captions: present, mostly well-formed and of sane length, not all one caption."""
    gxe = expectations()
    tables = []
    for name, path in (("prompted", paths.PROMPTED_CAPTIONS), ("unprompted", paths.UNPROMPTED_CAPTIONS)):
        frame = read_parquet(path, columns=["caption"])
        frame = frame.assign(n_words=_words(frame["caption"]))
        exps = [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="caption"),
            gxe.ExpectColumnValuesToBeBetween(
                column="n_words",
                min_value=g.caption_min_words,
                max_value=g.caption_max_words,
                mostly=g.caption_min_valid_fraction,
            ),
            gxe.ExpectColumnValuesToMatchRegex(
                column="caption", regex=CAPTION_PATTERN, mostly=g.caption_min_valid_fraction
            ),
            # Rounded: 1 - 0.95 is 0.050000000000000044 in binary, which GX's sentence (and the gate's
            # page) would print as such; 12 digits keep every fraction a user can mean.
            gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
                column="caption", min_value=round(1.0 - g.max_duplicate_fraction, 12)
            ),
        ]
        if name == "prompted":
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column="concept"))
        tables.append(Table(name, frame, exps, ["caption", "concept", "n_words"]))
    return tables


def balanced_tables(g: GateParams, labels: tuple[str, ...], concept_kind: str) -> list[Table]:
    """Balanced captions: complete, all of sane length, unique, covering the concepts evenly.

    `labels` are the columns balancing must have filled besides the concept (the world's parsed
    attributes; none in the coco profile) and `concept_kind` the kind of concept it balances over.
    """
    gxe = expectations()
    frame = read_parquet(paths.BALANCED, columns=["caption", "concept"])
    frame = frame.assign(n_words=_words(frame["caption"]))
    concepts = read_parquet(paths.CONCEPTS, columns=["concept"])
    # balance labels each caption with its parsed colour-shape combination: those are the concepts to
    # cover (the world's concept table also lists bare colours and shapes, used only as prompts).
    if "kind" in concepts:
        concepts = concepts[concepts["kind"] == concept_kind]
    concept_set = concepts["concept"].dropna().unique().tolist()
    exps = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("caption", "concept", *labels)),
        gxe.ExpectColumnValuesToBeBetween(
            column="n_words", min_value=g.caption_min_words, max_value=g.caption_max_words
        ),
        gxe.ExpectColumnValuesToMatchRegex(column="caption", regex=CAPTION_PATTERN),
        gxe.ExpectColumnValuesToBeUnique(column="caption"),
        gxe.ExpectColumnValuesToBeInSet(column="concept", value_set=concept_set),
    ]
    # Coverage and balance are properties of the concept histogram: one row per concept of the set, so
    # the offending rows GX reports are the uncovered or over-represented concepts themselves.
    counts = frame["concept"].value_counts().reindex(concept_set, fill_value=0)
    smallest = counts[counts > 0].min() if (counts > 0).any() else 1
    histogram = pd.DataFrame(
        {"concept": counts.index, "count": counts.to_numpy(), "ratio_to_min": counts.to_numpy() / smallest}
    )
    hist_exps = [
        gxe.ExpectColumnValuesToBeBetween(column="count", min_value=1, mostly=g.balanced_min_concept_coverage),
        gxe.ExpectColumnValuesToBeBetween(column="ratio_to_min", max_value=g.balanced_max_concept_ratio),
    ]
    return [
        Table("balanced", frame, exps, ["caption", "concept", *labels, "n_words"]),
        Table("concept_histogram", histogram, hist_exps, ["concept", "count", "ratio_to_min"]),
    ]


def synthetic_tables(g: GateParams) -> list[Table]:
    """Synthetic embeddings: one per caption of their selection, finite, the real embeddings' dimension,
    norms within the real range."""
    gxe = expectations()
    real = read_tensors(paths.REAL_EMBEDDINGS)["embeddings"]
    real_norms = np.linalg.norm(real.astype(np.float64), axis=1)
    low = float(real_norms.min()) * (1 - g.embedding_norm_slack)
    high = float(real_norms.max()) * (1 + g.embedding_norm_slack)
    tables = []
    for selection in paths.SELECTIONS_BY_NAME:
        path = paths.synthetic_embeddings(selection)
        tensors = read_tensors(path)
        if "embeddings" not in tensors:
            raise GateError(
                f"{path} has no 'embeddings' tensor (keys: {sorted(tensors)}); re-run 'dvc repro synthesize'"
            )
        n_captions = len(read_parquet(paths.synthetic_captions(selection), columns=["caption"]))
        emb = np.asarray(tensors["embeddings"])
        emb2d = emb.reshape(len(emb), -1) if emb.ndim >= 1 and len(emb) else emb.reshape(0, 0)
        with np.errstate(all="ignore"):
            norms = np.linalg.norm(emb2d.astype(np.float64), axis=1) if emb2d.size else np.zeros(len(emb2d))
        frame = pd.DataFrame(
            {
                "row": np.arange(len(emb2d)),
                "finite": np.isfinite(emb2d).all(axis=1) if emb2d.size else np.ones(len(emb2d), bool),
                "dim": emb.shape[-1] if emb.ndim == 2 else -1,
                "norm": norms,
            }
        )
        exps = [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            # Row-aligned with the captions: a mismatch would pair captions with the wrong embeddings.
            gxe.ExpectTableRowCountToEqual(value=n_captions),
            gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="dim", value_set=[int(real.shape[1])]),
            gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=low, max_value=high),
        ]
        tables.append(Table(selection, frame, exps, ["row", "finite", "dim", "norm"]))
    return tables


def run_gate(gate: str, tables: list[Table], thresholds: dict[str, Any]) -> GateResult:
    """Validate and write the report (with the thresholds used) to `paths.gate_report(gate)` and its page
    to `paths.gate_page(gate)`; the caller records `result.metrics` and, when `not result.success`, raises
    `result.error()`."""
    result = validate(gate, tables, thresholds)
    page = gate_page.render(result.report, result.offending_rows)
    # The report and its page are the gate's outputs, and after a failure what the user reads next: they
    # land at once, not with the stage's other writes (which a failure discards).
    with landing_now():
        write_json(result.report, paths.gate_report(gate))
        with atomic_path(paths.gate_page(gate)) as tmp:
            tmp.write_text(page)
    return result
