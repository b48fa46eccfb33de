"""Great Expectations gates: bad data fails and names the expectations, good data passes."""

from __future__ import annotations

import html
import json
import os
import re
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synth2 import paths
from synth2.gates import GateError
from synth2.io import write_parquet, write_tensors
from synth2.params import load_params
from synth2.stages import prepare
from synth2.stages.gate import check
from synth2.world.scenes import COLOURS, SHAPES
from tests.conftest import run_stage, write_params

TEMPLATES = ["a {c} {s}", "a {c} {s} in the picture", "there is a {c} {s} here", "one {c} {s} on a dark background"]


def good_captions() -> pd.DataFrame:
    rows = [
        {"caption": t.format(c=c, s=s), "concept": f"{c} {s}"}
        for (c, s), t in product(product(COLOURS, SHAPES), TEMPLATES)
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_captions(prompted: pd.DataFrame, unprompted: pd.DataFrame | None = None) -> None:
    write_parquet(prompted, paths.PROMPTED_CAPTIONS)
    write_parquet(
        good_captions().sample(frac=0.5, random_state=0) if unprompted is None else unprompted,
        paths.UNPROMPTED_CAPTIONS,
    )


def test_good_captions_pass_and_report_is_written(project: Path):
    write_captions(good_captions())
    result = check("captions", load_params())
    assert result.success
    report = json.loads((project / paths.gate_report("captions")).read_text())
    assert report["success"] and set(report["tables"]) == {"prompted", "unprompted"}
    assert all(table["success"] for table in report["tables"].values())


def test_bad_captions_fail_and_name_each_expectation(project: Path):
    good = good_captions().head(20)
    garbage = pd.DataFrame(
        {
            "caption": ["x", None, None] + [f"<unk>#{i}$$@@" for i in range(20)],
            "concept": [None, "red circle", "blue star"] + ["red circle"] * 20,
        }
    )
    duplicates = pd.DataFrame({"caption": ["a red circle"] * 500 + ["a blue star"] * 3, "concept": "red circle"})
    write_captions(pd.concat([garbage, good], ignore_index=True), duplicates)
    with pytest.raises(GateError) as failure:
        check("captions", load_params())
    message = str(failure.value)
    assert "\n" not in message
    for expectation in (
        "prompted: expect_column_values_to_not_be_null(caption)",
        "prompted: expect_column_values_to_not_be_null(concept)",
        "prompted: expect_column_values_to_match_regex(caption",
        "prompted: expect_column_values_to_be_between(n_words",
        "unprompted: expect_column_proportion_of_unique_values_to_be_between(caption",
    ):
        assert expectation in message, expectation
    assert "caption='<unk>#0$$@@'" in message  # offending rows are shown
    assert "'a red circle'×500" in message  # and the most repeated caption
    report = json.loads((project / paths.gate_report("captions")).read_text())
    assert report["success"] is False and len(report["failures"]) == 5


def test_balanced_gate_checks_coverage_and_balance(project: Path):
    combos = [f"{c} {s}" for c, s in product(COLOURS, SHAPES)]
    concepts = pd.DataFrame(
        {"concept": [*COLOURS, *combos], "kind": ["colour"] * len(COLOURS) + ["combo"] * len(combos)}
    )
    write_parquet(concepts, paths.CONCEPTS)
    good = good_captions().assign(
        colour=lambda d: d.concept.str.split().str[0], shape=lambda d: d.concept.str.split().str[1]
    )
    write_parquet(good, paths.BALANCED)
    assert check("balanced", load_params()).success

    skewed = good[good.concept.str.startswith(("red", "blue"))]  # 12 of 48 concepts
    skewed = pd.concat(
        [
            skewed,
            pd.DataFrame(
                {
                    "caption": [f"a red circle number {i} here" for i in range(60)],
                    "concept": "red circle",
                    "colour": "red",
                    "shape": "circle",
                }
            ),
        ]
    )
    write_parquet(skewed, paths.BALANCED)
    with pytest.raises(GateError) as failure:
        check("balanced", load_params())
    message = str(failure.value)
    assert "concept_histogram: expect_column_values_to_be_between(count" in message
    assert "concept_histogram: expect_column_values_to_be_between(ratio_to_min" in message
    assert "concept='red circle'" in message  # the over-represented concept is the sample row


def test_synthetic_gate_checks_finite_dimension_and_norms(project: Path):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(50, 16)).astype(np.float32)
    write_tensors({"embeddings": real}, paths.REAL_EMBEDDINGS)

    def write_synthetic(selection: str, embeddings: np.ndarray, n_captions: int) -> None:
        write_tensors({"embeddings": embeddings}, paths.synthetic_embeddings(selection))
        write_parquet(pd.DataFrame({"caption": ["a red star"] * n_captions}), paths.synthetic_captions(selection))

    write_synthetic("balanced", real[:20] * 1.1, 20)
    write_synthetic("unbalanced", real[20:40], 20)
    assert check("synthetic", load_params()).success

    bad = real[:20].copy()
    bad[3, 0] = np.nan
    bad[5] *= 100.0
    write_synthetic("balanced", bad, 20)
    write_synthetic("unbalanced", real[:10, :8], 12)  # wrong dimension, and two captions without embeddings
    with pytest.raises(GateError) as failure:
        check("synthetic", load_params())
    message = str(failure.value)
    assert "balanced: expect_column_values_to_be_in_set(finite" in message and "row=3" in message
    assert "balanced: expect_column_values_to_be_between(norm" in message and "row=5" in message
    assert "unbalanced: expect_column_values_to_be_in_set(dim" in message
    assert "unbalanced: expect_table_row_count_to_equal(value=12)" in message


def test_real_and_pool_gates_pass_on_the_world_and_catch_bad_rows(project: Path):
    prepare.run(load_params())  # in-process: a subprocess would import everything again
    assert check("real", load_params()).success and check("pool", load_params()).success
    real = pd.read_parquet(paths.REAL_TRAIN)
    real.loc[0, "image_id"] = real.loc[2, "image_id"]
    real.loc[1, "colour"] = "mauve"
    write_parquet(pd.concat([real, real.tail(1)], ignore_index=True), paths.REAL_TRAIN)  # a row with no image
    with pytest.raises(GateError) as failure:
        check("real", load_params())
    message = str(failure.value)
    assert "real_train: expect_column_values_to_be_unique(image_id" in message
    assert f"real_train: expect_table_row_count_to_equal(value={len(real)})" in message
    assert "real_train: expect_column_values_to_be_in_set(colour" in message and "colour='mauve'" in message
    assert check("pool", load_params()).success  # the pool gate reads the pool only


def test_gate_stage_exits_nonzero_with_one_line(tmp_path: Path):
    write_params(tmp_path)
    os.chdir(tmp_path)
    try:
        write_captions(pd.DataFrame({"caption": [None, "zz"], "concept": ["a", None]}))
    finally:
        os.chdir(Path(__file__).resolve().parents[1])
    result = run_stage("gate", tmp_path, "captions", check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "gate 'captions' failed" in errors[0]
    assert (tmp_path / paths.gate_report("captions")).exists()


# ------------------------------------------------------------------------------------ the pages people read


def page_text(page: str) -> str:
    """What a person reads on a page: its text, tags dropped, entities decoded, whitespace collapsed."""
    text = re.sub(r"<(style|script)>.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def expectation_row(page: str, table: str, expectation: str, column: str | None = None) -> tuple[str, str]:
    """(the row's class, its text) of one expectation (on `column`) in one table's section of a gate page."""
    section = page.split(f'<h2 id="{table}">')[1].split("<h2")[0]
    on_column = f"<code>column</code> = <code>&quot;{column}&quot;</code>" if column else ""
    # An expectation's row is anchored (`<tr id="table-n"`); a nested table of offending rows is not.
    rows = [row for row in section.split('<tr id="')[1:] if f"<code>{expectation}</code>" in row and on_column in row]
    assert len(rows) == 1, f"{table}: {expectation} is on the page {len(rows)} times"
    return rows[0].split(">")[0], page_text('<tr id="' + rows[0])


def test_a_gate_page_lists_every_expectation_in_gx_words_and_is_deterministic(project: Path):
    write_captions(good_captions())
    check("captions", load_params())
    report = json.loads((project / paths.gate_report("captions")).read_text())
    page_path = project / paths.gate_page("captions")
    page = page_path.read_text()
    assert "Gate captions: passed" in page_text(page)
    for name, table in report["tables"].items():
        for result in table["results"]:
            config = result["expectation_config"]
            row_class, _ = expectation_row(page, name, config["type"], config["kwargs"].get("column"))
            assert "failed" not in row_class
    n_expectations = sum(len(t["results"]) for t in report["tables"].values())
    assert n_expectations == 11 and f"{n_expectations} expectations checked on 2 table(s)" in page_text(page)
    _, row = expectation_row(page, "prompted", "expect_column_values_to_be_between")
    # GX's own sentence, as its Data Docs print it, and the arguments it was given
    assert "n_words values must be greater than or equal to" in row and "mostly = " in row
    assert "caption_min_words" in page_text(page)  # the thresholds the gate used
    _, row = expectation_row(page, "prompted", "expect_column_proportion_of_unique_values_to_be_between")
    share = round(1 - load_params().gates.max_duplicate_fraction, 6)  # the value a person set, not its binary noise
    assert f"greater than or equal to {share}." in row, row
    check("captions", load_params())
    assert page_path.read_text() == page  # a DVC out: the same validation gives the same bytes


def test_a_failing_gate_page_shows_the_failure_its_unexpected_values_and_rows_escaped(project: Path):
    markup = "<script>alert(1)</script> a red circle"
    garbage = pd.DataFrame({"caption": [markup, None, *[f"<unk>#{i}$$@@" for i in range(3)]], "concept": "red circle"})
    write_captions(pd.concat([garbage, good_captions().head(3)], ignore_index=True))
    with pytest.raises(GateError) as failure:
        check("captions", load_params())
    assert str(paths.gate_page("captions")) in str(failure.value)  # the one line points at the page
    page = (project / paths.gate_page("captions")).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page  # a caption's markup is shown, never run
    assert "Gate captions: FAILED" in page_text(page)
    row_class, row = expectation_row(page, "prompted", "expect_column_values_to_match_regex")
    assert "failed" in row_class and "FAILED" in row
    assert "4 of 7 rows unexpected (57.14%); 1 of 8 rows null, not checked" in row  # as GX counts them
    assert f'"{markup}" × 1' in row and '"<unk>#0$$@@" × 1' in row  # GX's unexpected values and counts
    assert "offending rows:" in row and '"red circle"' in row  # and the rows they sit in
    row_class, row = expectation_row(page, "unprompted", "expect_column_values_to_match_regex")
    assert "failed" not in row_class and "0 of" in row
    assert "prompted: expect_column_values_to_not_be_null(caption): 1 of 8 rows unexpected" in page_text(page)


def test_the_pipeline_page_gates_section_links_each_gate_page_and_lists_failures(project: Path):
    from synth2.pipeline import GATES
    from synth2.report import _gates_section

    write_captions(pd.DataFrame({"caption": [None, "zz"], "concept": ["a", None]}))
    with pytest.raises(GateError):
        check("captions", load_params())
    section = _gates_section()
    assert section.count("<tr>") == 1 + len(GATES)
    assert '<a href="gates/captions.html">gates/captions.html</a>' in section
    assert "<td>captions</td><td>FAILED</td><td>prompted, unprompted</td><td>11</td>" in section
    assert "<td>pool</td><td>not run</td>" in section
    assert "captions: prompted: expect_column_values_to_not_be_null(caption): 1 of 2 rows unexpected" in section


@pytest.mark.slow  # two stage processes and a new MLflow store: about a minute
def test_the_gate_page_is_an_artifact_of_the_gate_run_passed_or_failed(tmp_path: Path):
    """Through the stage's entry point, in a DVC project, recording into a real MLflow store."""
    import shutil
    import subprocess
    import sys

    from dvc.repo import Repo
    from mlflow import MlflowClient

    from tests.conftest import ROOT, stage_env

    write_params(tmp_path)
    shutil.copy(ROOT / "dvc.yaml", tmp_path)  # the stage's outs: what its run records on success
    Repo.init(str(tmp_path), no_scm=True)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    env = stage_env() | {"SYNTH2_TRACKING": "1", "SYNTH2_TRACKING_STRICT": "1", "MLFLOW_TRACKING_URI": store}

    def gate_run(prompted: pd.DataFrame) -> subprocess.CompletedProcess:
        os.chdir(tmp_path)
        try:
            write_captions(prompted)
        finally:
            os.chdir(ROOT)
        command = [sys.executable, "-m", "synth2.stages.gate", "captions"]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    assert gate_run(good_captions()).returncode == 0
    assert gate_run(pd.DataFrame({"caption": [None, "zz"], "concept": ["a", None]})).returncode == 1
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("synth2").experiment_id], order_by=["start_time"])
    assert [r.info.status for r in runs] == ["FINISHED", "FAILED"]
    for run in runs:
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "reports/gates")}
        assert artifacts == {"reports/gates/captions.json", "reports/gates/captions.html"}, run.info.status
    failed_page = Path(client.download_artifacts(runs[1].info.run_id, "reports/gates/captions.html", str(tmp_path)))
    assert "Gate captions: FAILED" in page_text(failed_page.read_text())
