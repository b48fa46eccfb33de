"""A gate's validation as one HTML page a person reads, `reports/gates/<gate>.html` beside its JSON report.

The page shows every table the gate validated and, for each, every expectation: what it demands in Great
Expectations' own words (GX's prescriptive renderer, the sentence its Data Docs print), its arguments,
whether it held, what GX observed, the unexpected values with their counts and, for a failed one, the
offending rows. Failures come first, one line each as the stage's error says them.

Why not GX's Data Docs themselves (checked on GX 1.24, `ValidationResultsPageRenderer` +
`DefaultJinjaPageView`, what `build_data_docs` writes per validation): the same validation never renders
to the same bytes (a render time in the logo's URL, a uuid4 in every collapsible block), and this page is
a DVC out, where that would make dvc.lock differ run to run; the page's styling and scripts load from
CDNs (unstyled offline); and it writes unexpected values unescaped, so a caption holding markup (what the
captions gate exists to catch) turns into markup in the page. This page is self-contained, escapes every
value, and holds no time: the same validation gives the same bytes.

`summary` condenses a report for the pipeline's page (synth2.report).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;"
    "vertical-align:top}code,pre{font-size:90%}pre{margin:0;white-space:pre-wrap;word-break:break-all}"
    ".passed{color:#1a7f37;font-weight:bold}.failed{color:#c62828;font-weight:bold}"
    "tr.failed-row{background:#fdecea}ul.values{margin:0;padding-left:1.2em}"
)
LONG_VALUE = 200  # characters: a longer argument (e.g. a value set of every concept) folds into <details>
HIDDEN_KWARGS = {"batch_id"}  # GX's own bookkeeping, the same for every expectation of a table


@dataclass(frozen=True)
class GateSummary:
    """What the pipeline's page says of a gate."""

    gate: str
    success: bool
    tables: tuple[str, ...]
    expectations: int
    failed: int
    failures: tuple[str, ...]


def summary(report: Mapping[str, Any]) -> GateSummary:
    tables = report.get("tables", {})
    results = [r for table in tables.values() for r in table.get("results", [])]
    return GateSummary(
        gate=report.get("gate", ""),
        success=bool(report.get("success")),
        tables=tuple(tables),
        expectations=len(results),
        failed=sum(not r.get("success") for r in results),
        failures=tuple(report.get("failures", [])),
    )


def render(report: Mapping[str, Any], offending_rows: Mapping[str, Mapping[int, list[dict]]] | None = None) -> str:
    """The page of one gate's report (synth2.gates.validate's); `offending_rows[table][i]`: rows of the
    table that expectation i found unexpected, in the columns that identify a row."""
    offending_rows = offending_rows or {}
    gate = str(report.get("gate", ""))
    gate_summary = summary(report)
    verdict = _verdict(gate_summary.success)
    title = f"Gate {gate}: {'passed' if gate_summary.success else 'FAILED'}"
    parts = [
        f"<h1>Gate <code>{_e(gate)}</code>: {verdict}</h1>",
        f"<p>{gate_summary.expectations} expectations checked on {len(gate_summary.tables)} table(s) by Great "
        f"Expectations {_e(_gx_version(report))}; {gate_summary.failed} failed. The full validation result is "
        f'<a href="{_e(gate)}.json">{_e(gate)}.json</a>.</p>',
    ]
    thresholds = report.get("thresholds") or {}
    if thresholds:
        parts.append("<h2>Thresholds (params.yaml <code>gates</code>)</h2>")
        parts.append(_table(["key", "value"], [[f"<code>{_e(k)}</code>", _e(_text(v))] for k, v in thresholds.items()]))
    if gate_summary.failures:
        parts.append("<h2>Failures</h2><ol>" + "".join(f"<li>{_e(f)}</li>" for f in gate_summary.failures) + "</ol>")
    parts.append("<h2>Tables</h2>")
    parts.append(_table(["table", "result", "rows", "expectations", "failed", "data fingerprint"], _overview(report)))
    for name, table in report.get("tables", {}).items():
        parts.append(f'<h2 id="{_e(name)}">Table <code>{_e(name)}</code>: {_verdict(table.get("success"))}</h2>')
        rows = [
            _expectation_row(i, result, offending_rows.get(name, {}).get(i, []))
            for i, result in enumerate(table.get("results", []))
        ]
        header = ["#", "result", "expectation", "arguments", "observed", "unexpected values"]
        parts.append(_table(header, rows, row_ids=[f"{name}-{i + 1}" for i in range(len(rows))]))
    body = "\n".join(parts)
    head = f'<meta charset="utf-8"><title>{_e(title)}</title><style>{STYLE}</style>'
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>\n"


# ---------------------------------------------------------------------------------------------- parts


def _overview(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for name, table in report.get("tables", {}).items():
        results = table.get("results", [])
        counts = [r.get("result", {}).get("element_count") for r in results]
        n_rows = next((c for c in counts if c is not None), None)
        fingerprint = table.get("meta", {}).get("batch_markers", {}).get("pandas_data_fingerprint", "")
        rows.append(
            [
                f'<a href="#{_e(name)}">{_e(name)}</a>',
                _verdict(table.get("success")),
                _e(_text(n_rows)) if n_rows is not None else "",
                str(len(results)),
                str(sum(not r.get("success") for r in results)),
                f"<code>{_e(fingerprint)}</code>",
            ]
        )
    return rows


def _expectation_row(index: int, result: Mapping[str, Any], offending: list[dict]) -> list[str]:
    config = result.get("expectation_config", {})
    kwargs = {k: v for k, v in config.get("kwargs", {}).items() if k not in HIDDEN_KWARGS}
    exception = result.get("exception_info") or {}
    if exception.get("raised_exception"):
        verdict = '<span class="failed">error</span>'
    else:
        verdict = _verdict(result.get("success"))
    expectation = f"{_e(describe(config))}<br><code>{_e(config.get('type', ''))}</code>"
    arguments = "<br>".join(f"<code>{_e(k)}</code> = {_value(v)}" for k, v in kwargs.items())
    return [
        str(index + 1),
        verdict,
        expectation,
        arguments,
        _observed(result.get("result") or {}, exception),
        _unexpected(result.get("result") or {}, offending),
    ]


def _observed(res: Mapping[str, Any], exception: Mapping[str, Any]) -> str:
    if exception.get("raised_exception"):
        return "raised: " + _e(str(exception.get("exception_message")))
    if "unexpected_count" in res:
        # GX's percentage is of the rows it checked: nulls are not checked, except by a not-null expectation.
        rows, missing = res.get("element_count"), res.get("missing_count") or 0
        checked = rows - missing if isinstance(rows, int) else rows
        text = f"{res['unexpected_count']} of {checked} rows unexpected"
        if isinstance(res.get("unexpected_percent"), (int, float)):
            text += f" ({res['unexpected_percent']:.4g}%)"
        if missing:
            text += f"; {missing} of {rows} rows null, not checked"
        return _e(text)
    if "observed_value" in res:
        return "observed " + _value(res["observed_value"])
    return ""


def _unexpected(res: Mapping[str, Any], offending: list[dict]) -> str:
    parts = []
    counts = res.get("partial_unexpected_counts")
    values = res.get("partial_unexpected_list")
    if counts:
        parts.append(
            '<ul class="values">'
            + "".join(f"<li>{_value(c.get('value'))} × {_e(_text(c.get('count')))}</li>" for c in counts)
            + "</ul>"
        )
    elif values:
        parts.append('<ul class="values">' + "".join(f"<li>{_value(v)}</li>" for v in values) + "</ul>")
    if values and res.get("unexpected_count", 0) > len(values):
        parts.append(f"<p>(the first {len(values)} of {res['unexpected_count']})</p>")
    if offending:
        columns = list(offending[0])
        rows = [[_e(_text(row.get(c))) for c in columns] for row in offending]
        parts.append("offending rows:" + _table([_e(c) for c in columns], rows))
    return "".join(parts)


def describe(config: Mapping[str, Any]) -> str:
    """The expectation in GX's words ("caption values must never be null."), as its Data Docs say it;
    the expectation's type when GX has no sentence for it."""
    kind = str(config.get("type", ""))
    try:
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
        from great_expectations.expectations.registry import get_renderer_impl
        from great_expectations.render import LegacyRendererType

        renderer = get_renderer_impl(object_name=kind, renderer_type=LegacyRendererType.PRESCRIPTIVE)
        configuration = ExpectationConfiguration(type=kind, kwargs=dict(config.get("kwargs", {})))
        rendered = renderer[1](configuration=configuration, runtime_configuration={}) if renderer else []
        text = " ".join(str(part) for part in rendered).strip()
    except Exception:  # a page with the type is better than no page
        text = ""
    return text or kind


# ---------------------------------------------------------------------------------------------- html


def _verdict(success: Any) -> str:
    return '<span class="passed">passed</span>' if success else '<span class="failed">FAILED</span>'


def _gx_version(report: Mapping[str, Any]) -> str:
    for table in report.get("tables", {}).values():
        version = table.get("meta", {}).get("great_expectations_version")
        if version:
            return str(version)
    return ""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _text(value: Any) -> str:
    """A value as a person reads it: strings quoted (an empty or blank caption stays visible), null as null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _value(value: Any) -> str:
    """An argument or observed value, escaped; a long one folded into <details>, still all there."""
    text = _text(value)
    if len(text) <= LONG_VALUE:
        return f"<code>{_e(text)}</code>"
    return f"<details><summary><code>{_e(text[:80])}…</code></summary><pre>{_e(text)}</pre></details>"


def _table(header: Iterable[str], rows: Iterable[list[str]], row_ids: list[str] | None = None) -> str:
    """A table of cells that are already HTML. With `row_ids` (an anchor per row: the expectations), a row
    whose result cell (the 2nd) failed is marked."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        attributes = ""
        if row_ids is not None:
            attributes = f' id="{_e(row_ids[i])}"' + (' class="failed-row"' if 'class="failed"' in row[1] else "")
        body.append(f"<tr{attributes}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"
