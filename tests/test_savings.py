"""The savings factor of a sweep over the human pairs (synth2.study.savings) on hand-made tables, and its
place in the study's reports: fast, no pipeline runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from synth2.study.savings import (
    AT_OR_BELOW_SMALLEST,
    MATCHED,
    NEVER,
    crossing,
    data_efficiency,
    gains,
    metric_efficiency,
    savings_factor,
)
from synth2.study.stats import t_interval

SIZES = [500, 1000, 2000]
ROOT = Path(__file__).resolve().parents[1]


def seeds(means, offsets):
    """A (sizes, seeds) table: per size its mean plus each seed's offset (offsets sum to 0)."""
    return np.array([[m + o for o in offsets] for m in means])


def test_an_exact_crossing_on_log_n():
    # Baseline at 2000 = 5.0; synth 4.8 at 500 and 5.2 at 1000: halfway on log N, sqrt(500 * 1000).
    found = crossing(SIZES, [4.0, 4.5, 5.0], [4.8, 5.2, 5.6])
    assert found.status == MATCHED and found.target == 5.0
    assert found.matched_at == pytest.approx(math.exp((math.log(500) + math.log(1000)) / 2)) == pytest.approx(707.107)
    assert found.factor == pytest.approx(2000 / 707.107, abs=1e-4) == pytest.approx(2.828, abs=1e-3)
    # A quarter of the way from 4.9 to 5.3: 500 * 2 ** 0.25, not the linear 625.
    quarter = crossing(SIZES, [4.0, 4.5, 5.0], [4.9, 5.3, 5.6])
    assert quarter.matched_at == pytest.approx(500 * 2**0.25) == pytest.approx(594.6, abs=0.1)
    # Reached only at the full size: factor 1.
    assert crossing(SIZES, [4.0, 4.5, 5.0], [4.0, 4.6, 5.0]).factor == pytest.approx(1.0)


def test_already_above_at_the_smallest_size_is_a_lower_bound():
    table = savings_factor(SIZES, seeds([4.0, 4.5, 5.0], [-0.01, 0.01]), seeds([5.1, 5.4, 5.6], [-0.01, 0.01]), 200)
    assert table["factor"] == 4.0 and table["bound"] == "at least" and table["matched_at"] == 500
    assert "already at the smallest size (500)" in table["note"] and "at least 4.00" in table["note"]
    assert table["bootstrap"]["at_or_below_smallest"] == 1.0
    assert table["ci95"] == [4.0, 4.0] and "upper end is a lower bound" in table["note"]
    assert crossing(SIZES, [4.0, 4.5, 5.0], [5.0, 4.9, 5.6]).status == AT_OR_BELOW_SMALLEST  # equal counts


def test_never_matched_within_the_sweep_is_reported_as_such():
    table = savings_factor(SIZES, seeds([4.0, 4.5, 5.0], [-0.01, 0.01]), seeds([4.2, 4.6, 4.9], [-0.01, 0.01]), 200)
    assert table["factor"] is None and table["matched_at"] is None and table["bound"] is None
    assert "does not reach the 2000-pair baseline at any swept size (500-2000)" in table["note"]
    assert table["ci95"] == [None, None] and table["bootstrap"]["never_matched"] == 1.0
    assert crossing(SIZES, [4.0, 4.5, 5.0], [4.2, 4.6, 4.9]).status == NEVER


def test_a_non_monotone_synth_curve_uses_its_first_crossing():
    sizes = [250, 500, 1000, 2000]
    # Crosses 5.0 between 250 and 500, dips below it at 1000, crosses again between 1000 and 2000.
    found = crossing(sizes, [3.5, 4.0, 4.5, 5.0], [4.8, 5.2, 4.9, 5.6])
    assert found.matched_at == pytest.approx(250 * 2**0.5) and found.factor == pytest.approx(2000 / (250 * 2**0.5))


def test_the_bootstrap_interval_holds_the_estimate_and_widens_with_the_seed_spread():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(3, 6))
    noise -= noise.mean(axis=1, keepdims=True)  # the same means, whatever the spread
    baseline = seeds([4.0, 4.5, 5.0], [0.0] * 6)
    widths = []
    for spread in (0.05, 0.2):
        synth = seeds([4.8, 5.2, 5.6], [0.0] * 6) + spread * noise
        table = savings_factor(SIZES, baseline, synth, samples=1000)
        assert table["factor"] == pytest.approx(2000 / math.sqrt(500 * 1000))  # the means are unchanged
        low, high = table["ci95"]
        assert low <= table["factor"] <= high
        widths.append(high - low)
    assert widths[1] > 2 * widths[0] > 0


def test_the_bootstrap_pairs_the_seeds_across_variants_and_sizes():
    # A large seed effect shared by both variants at every size (seed 0 is an easy world, seed 1 a hard
    # one): every paired resample moves the target and synth's curve together, so the crossing never
    # moves. Resampling the variants independently gives [never matched, 4] on this table.
    offsets = [-1.0, 1.0, -0.5, 0.5]
    table = savings_factor(SIZES, seeds([4.0, 4.5, 5.0], offsets), seeds([4.8, 5.2, 5.6], offsets), 1000)
    assert table["ci95"] == pytest.approx([table["factor"]] * 2) and table["factor"] == pytest.approx(2.828, abs=1e-3)


def test_the_paired_gain_at_every_size_and_the_papers_17_percent():
    baseline = np.array([[3.9, 4.1], [4.4, 4.6], [4.9, 5.1]])
    synth = baseline + np.array([[0.9, 0.7], [0.75, 0.65], [0.5, 0.7]])
    rows = gains(SIZES, baseline, synth)
    assert [row["size"] for row in rows] == SIZES
    first = rows[0]
    assert first["gain"]["mean"] == pytest.approx(0.8) and first["gain"]["relative"] == pytest.approx(0.2)
    assert first["gain"]["ci95"] == pytest.approx(list(t_interval([0.9, 0.7])))  # over seeds, paired
    assert first["gain"]["relative_ci95"] == pytest.approx([c / 4.0 for c in t_interval([0.9, 0.7])])
    assert first["baseline"]["mean"] == pytest.approx(4.0) and first["synth"]["mean"] == pytest.approx(4.8)
    entry = metric_efficiency(SIZES, baseline, synth, samples=200)
    assert entry["paper_relative_gain"] == {"threshold": 0.17, "reached_at": [500]}  # +20%, +15.6%, +12%
    assert entry["largest_gain_at"] == 500 and entry["largest_relative_gain_at"] == 500
    assert set(entry) >= {"factor", "ci95", "matched_at", "note", "per_size"}


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="ascending"):
        crossing_table = np.ones((3, 2))
        savings_factor([1000, 500, 2000], crossing_table, crossing_table)
    with pytest.raises(ValueError, match="expected"):
        savings_factor(SIZES, np.ones((3, 2)), np.ones((3, 3)))


def efficiency_configurations(sizes, baseline, synth):
    """A study report's configurations for a sweep of the human pairs, in the order given."""
    configurations = []
    for n, base, syn in zip(sizes, baseline, synth, strict=True):
        test = {
            "baseline": {
                "overall": {"cider": {"values": list(base)}},
                "unseen": {"attr_colour_shape": {"values": list(base / 10)}},
            },
            "synth": {
                "overall": {"cider": {"values": list(syn)}},
                "unseen": {"attr_colour_shape": {"values": list(syn / 10)}},
            },
        }
        configurations.append({"label": f"world.prepare.real_train_size={n}", "value": n, "summary": {"test": test}})
    return configurations


def test_the_report_reads_the_curves_out_of_the_configurations_in_size_order():
    baseline, synth = seeds([4.0, 4.5, 5.0], [-0.1, 0.1]), seeds([4.8, 5.2, 5.6], [-0.1, 0.1])
    order = [2, 0, 1]  # the sweep's values as the user gave them: 2000, 500, 1000
    savings = data_efficiency(
        efficiency_configurations([SIZES[i] for i in order], baseline[order], synth[order]),
        [SIZES[i] for i in order],
        samples=200,
    )
    assert list(savings) == ["overall.cider", "unseen.attr_colour_shape"]
    for entry in savings.values():
        assert entry["factor"] == pytest.approx(2.828, abs=1e-3) and entry["full_size"] == 2000
        assert [row["size"] for row in entry["per_size"]] == SIZES


def test_the_data_efficiency_section_leads_the_report_and_has_its_plot(tmp_path):
    from synth2.study.report import markdown, write_reports

    report = json.loads((ROOT / "reports/study/budget.json").read_text())  # a committed report, no sweep
    assert "Data efficiency" not in markdown(report) and "Sweep:" not in markdown(report)

    baseline, synth = seeds([4.0, 4.5, 5.0], [-0.1, 0.1]), seeds([4.8, 5.2, 5.6], [-0.1, 0.1])
    [configuration] = report["configurations"]
    configurations = []
    for n, sized in zip(SIZES, efficiency_configurations(SIZES, baseline, synth), strict=True):
        test = json.loads(json.dumps(configuration["summary"]["test"]))
        for variant in ("baseline", "synth"):
            for subset, metrics in sized["summary"]["test"][variant].items():
                for metric, entry in metrics.items():
                    test[variant][subset][metric] = test[variant][subset][metric] | entry
        summary = configuration["summary"] | {"test": test}
        configurations.append(configuration | {"label": sized["label"], "value": n, "summary": summary})
    key = "world.prepare.real_train_size"
    swept = report | {"name": "pairs", "sweep": {"key": key, "values": SIZES}, "configurations": configurations}
    swept["savings"] = data_efficiency(configurations, SIZES, samples=200)
    outputs = write_reports(swept, tmp_path)
    text = outputs["md"].read_text()
    assert text.index("## Data efficiency (test)") < text.index(f"## {key}=500")
    assert f"Sweep: `{key}` = 500, 1000, 2000" in text
    assert "| overall CIDEr | 5.000 | 707 | 2.83 |" in text
    assert "| 500 | 4.000 ± 1.271 | 4.800 ± 1.271 | +0.800 |" in text  # t(0.975, 1) * 0.1414 / sqrt(2)
    assert "Relative gain ≥ +17% (the paper's) at: 500; largest gain at 500 human pairs (relative: 500)." in text
    assert outputs["efficiency.png"].stat().st_size > 0 and outputs["png"].stat().st_size > 0
    assert json.loads(outputs["json"].read_text())["savings"]["overall.cider"]["matched_at"] == pytest.approx(707.107)


def test_a_study_of_the_human_pairs_records_its_sweep_and_savings(tmp_path, monkeypatch):
    import pandas as pd

    from synth2.study import workflow
    from synth2.study.plan import Configuration, Study, Sweep
    from synth2.study.stats import SPLITS, SUBSETS, VARIANTS

    key = "world.prepare.real_train_size"
    cider = {"baseline": {500: 4.0, 1000: 4.5, 2000: 5.0}, "synth": {500: 4.8, 1000: 5.2, 2000: 5.6}}
    configurations = [Configuration(f"{key}={n}", {key: n}, n) for n in SIZES]
    study = Study("pairs", [0, 1], configurations, root=tmp_path, sweep=Sweep(key, SIZES))
    by_name = {name: (c.value, seed) for name, (c, seed) in study.experiments().items()}

    def read_results(root, name):  # hand-made evaluations instead of DVC experiments
        size, seed = by_name[name]
        value = {v: cider.get(v, cider["baseline"])[size] + (0.1 if seed else -0.1) for v in VARIANTS}
        metrics = {
            split: {v: {s: {"cider": value[v], "attr_colour_shape": value[v] / 10} for s in SUBSETS} for v in VARIANTS}
            for split in SPLITS
        }
        return metrics, pd.DataFrame()

    monkeypatch.setattr(workflow, "read_results", read_results)
    monkeypatch.setattr(workflow, "experiment_rounds", lambda root, name: {})  # hand-made: no rounds either
    report = workflow.collect(study, 1.0)
    assert report["sweep"] == {"key": key, "values": SIZES}
    assert [c["value"] for c in report["configurations"]] == SIZES
    gain = report["configurations"][0]["differences"]["synth - baseline"]["test"]["overall"]["cider"]
    assert gain["mean"] == pytest.approx(0.8)  # per value, the paired differences as before
    assert set(report["savings"]) == {"overall.cider", "unseen.attr_colour_shape"}
    assert report["savings"]["overall.cider"]["factor"] == pytest.approx(2.828, abs=1e-3)
    # Another key: the sweep is recorded, no savings; no sweep: `sweep` is null and nothing else changes.
    other = Study(
        "b", [0, 1], [Configuration("x", {key: 500}, 500)], root=tmp_path, sweep=Sweep("balance.target_size", [500])
    )
    by_name.update({name: (500, seed) for name, (_, seed) in other.experiments().items()})
    assert "savings" not in workflow.collect(other, 1.0)
    plain = Study("p", [0, 1], [Configuration("default", {key: 500})], root=tmp_path)
    by_name.update({name: (500, seed) for name, (_, seed) in plain.experiments().items()})
    plain_report = workflow.collect(plain, 1.0)
    assert plain_report["sweep"] is None and "value" not in plain_report["configurations"][0]
