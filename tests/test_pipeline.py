"""The whole Synth² pipeline, `dvc repro` on a tiny world: every stage runs for real on small data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from synth2 import paths
from synth2.pipeline import VARIANT_NAMES
from tests.conftest import run_stage, write_params
from tests.tiny_project import dvc as run_dvc

pytestmark = pytest.mark.slow


@pytest.fixture
def pipeline(tiny_pipeline: Path) -> Path:
    return tiny_pipeline


def dvc(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    return run_dvc(workspace, *args, SYNTH2_TRACKING="0")


def test_every_variant_is_scored_on_every_split(pipeline: Path):
    metrics = json.loads((pipeline / paths.EVAL_METRICS).read_text())
    keys = {
        "bleu4",
        "cider",
        "attr_colour",
        "attr_shape",
        "attr_size",
        "attr_position",
        "attr_colour_shape",
        "attr_all",
    }
    for split in ("val", "test"):
        for variant in VARIANT_NAMES:
            for subset in ("overall", "seen", "unseen"):
                assert set(metrics[split][variant][subset]) == keys
                scores = metrics[split][variant][subset]
                # All attributes right implies colour and shape right, which implies each of them right.
                colour_shape = scores["attr_colour_shape"]
                assert scores["attr_all"] <= colour_shape <= min(scores["attr_colour"], scores["attr_shape"])
        assert set(metrics["gain_over_baseline"][split]) == {"synth", "synth_unbalanced"}
    assert (pipeline / paths.EVAL_EXAMPLES).read_text().count("\n") > 3


def test_the_champion_is_chosen_on_validation(pipeline: Path):
    metrics = json.loads((pipeline / paths.EVAL_METRICS).read_text())
    champion = metrics["champion"]
    val = {v: metrics["val"][v]["unseen"]["attr_all"] for v in VARIANT_NAMES}  # tracking.champion_metric
    assert champion["metric"] == "val.unseen.attr_all" and champion["value"] == max(val.values())
    assert val[champion["variant"]] == max(val.values())
    assert champion["margin"] == max(val.values()) - sorted(val.values())[-2]


def test_per_image_scores_average_to_the_reported_ones(pipeline: Path):
    metrics = json.loads((pipeline / paths.EVAL_METRICS).read_text())
    per_image = pd.read_parquet(pipeline / paths.EVAL_PER_IMAGE)
    for (split, subset, variant), rows in per_image.groupby(["split", "subset", "variant"]):
        reported = metrics[split][variant][subset]
        assert rows["cider"].mean() == pytest.approx(reported["cider"], abs=1e-9)
        assert rows["attr_colour_shape"].mean() == pytest.approx(reported["attr_colour_shape"], abs=1e-12)
    val, test = (set(per_image.loc[per_image["split"] == s, "image_id"]) for s in ("val", "test"))
    assert val and test and not val & test  # disjoint splits


def test_stage_outputs_are_complete(pipeline: Path):
    synthesize = json.loads((pipeline / paths.SYNTHESIZE_METRICS).read_text())
    balanced = pd.read_parquet(pipeline / paths.BALANCED)
    seen = set(pd.read_parquet(pipeline / paths.REAL_TRAIN, columns=["combo"])["combo"])
    assert synthesize["balanced"]["pairs"] == len(balanced) > 0
    held_out = ~balanced["concept"].isin(seen)  # combinations no human pair shows
    assert synthesize["balanced"]["held_out_pairs"] == held_out.sum()
    diversity = json.loads((pipeline / paths.DIVERSITY_REPORT).read_text())
    # Balancing evens out the concepts the LM over-samples.
    assert diversity["balanced"]["concept_entropy"] > diversity["unbalanced"]["concept_entropy"]
    for variant in VARIANT_NAMES:
        assert (pipeline / paths.vlm_dir(variant) / "lm" / "config.json").exists()
    assert (pipeline / paths.IMAGE_ENCODER_SHEET).stat().st_size > 0
    assert (pipeline / paths.SYNTHETIC_SHEET).stat().st_size > 0
    # No temporary siblings (atomic writes) left behind; DVC's own .gitignore files are expected.
    leftovers = [p for d in ("data", "models", "reports") for p in (pipeline / d).rglob(".*") if p.name != ".gitignore"]
    assert not leftovers


def test_the_captions_are_sampled_in_the_annotators_style(pipeline: Path, monkeypatch: pytest.MonkeyPatch):
    """The default configuration trains the caption LM with the human captions behind a style token
    (world.caption_lm.human_style_fraction > 0), and the captions stage asks for that style: the snapshot
    records the token as its prompt prefix, and the stage's captions are what the LM writes after it, not
    what it writes without it."""
    from synth2.models.caption_lm import generate_captions, load_caption_lm, prompt_prefix
    from synth2.params import load_params
    from synth2.profiles.world.caption_lm import STYLE_TOKEN

    monkeypatch.chdir(pipeline)
    params = load_params()
    assert params.world.caption_lm.human_style_fraction > 0 and params.compute.shards == 1
    model, tokenizer = load_caption_lm(paths.CAPTION_LM)
    assert prompt_prefix(model) == f"{STYLE_TOKEN} " and tokenizer.tokenize(STYLE_TOKEN) == [STYLE_TOKEN]
    prompted = pd.read_parquet(paths.PROMPTED_CAPTIONS)
    assert set(prompted["prompt_prefix"]) == {f"{STYLE_TOKEN} "}

    p = params.captions

    def sample(prefix: str) -> list[str]:
        prompts = [prefix + prompt for prompt in prompted["prompt"]]
        return generate_captions(
            model, tokenizer, prompts, p.temperature, p.top_p, p.max_new_tokens, p.batch_size, params.seed
        )

    assert sample(f"{STYLE_TOKEN} ") == prompted["caption"].tolist()
    unstyled = sample("")
    assert sum(a == b for a, b in zip(unstyled, prompted["caption"])) < len(prompted) / 4


def test_the_report_links_every_gate_page_and_says_each_passed(pipeline: Path):
    from synth2.pipeline import GATES

    report = (pipeline / paths.REPORT).read_text()
    section = report.split("<h2>Data-quality gates (Great Expectations)</h2>")[1]
    for gate in GATES:
        link = f'<a href="gates/{gate}.html">'
        assert f"<td>{gate}</td><td>passed</td>" in section and link in section, gate
        page = (pipeline / paths.REPORT).parent / "gates" / f"{gate}.html"  # where the link leads
        assert f"Gate <code>{gate}</code>: " in page.read_text(), gate


def test_rerun_is_a_no_op(pipeline: Path):
    status = dvc(pipeline, "status")
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout


def stale_stages(workspace: Path) -> set[str]:
    status = dvc(workspace, "status", "--json")
    assert status.returncode == 0, status.stderr
    return set(json.loads(status.stdout))


def test_params_re_run_only_the_stages_that_read_them(pipeline: Path):
    params_file = pipeline / "params.yaml"
    original = params_file.read_text()
    try:
        # A synthetic-data param: the synth variants re-train, the baseline does not.
        # check_params reads the whole file (it validates every key) and rewrites the same report when the
        # file is valid, so it is stale after any edit and nothing downstream re-runs because of it.
        params_file.write_text(original.replace("mix_ratio: 0.5", "mix_ratio: 0.25"))
        assert stale_stages(pipeline) == {"check_params", "train_vlm@synth", "train_vlm@synth_unbalanced"}
        # A coco key never re-runs a world stage.
        params_file.write_text(original.replace("decoder_steps: 25", "decoder_steps: 30"))
        assert stale_stages(pipeline) == {"check_params"}
    finally:
        params_file.write_text(original)


def test_missing_input_names_the_stage_to_run_first(tmp_path: Path):
    write_params(tmp_path)
    for stage, upstream in [("caption_lm", "prepare"), ("synthesize", "balance"), ("evaluate", "prepare")]:
        result = run_stage(stage, tmp_path, check=False)
        assert result.returncode == 1
        assert f"run the '{upstream}' stage first" in result.stderr.strip().splitlines()[-1], result.stderr


def test_an_edited_hook_makes_its_own_stage_stale_only(pipeline: Path):
    """Editing the world's scoring re-ran the whole pipeline when the world's hooks were one module."""
    for hook, stage in (("evaluate", "evaluate"), ("image_encoder", "image_encoder"), ("caption_lm", "caption_lm")):
        module = pipeline / "src/synth2/profiles/world" / f"{hook}.py"
        original = module.read_text()
        try:
            module.write_text(original + "\n# an edit\n")
            assert stale_stages(pipeline) == {stage}
        finally:
            module.write_text(original)


def test_fewer_human_pairs_re_embed_but_never_re_train_the_image_encoder(tiny_pipeline: Path, tmp_path: Path):
    """world.prepare.real_train_size changes the human pairs only: prepare re-runs, the pool it writes is
    byte-identical, so the image encoder (trained on the pool) is not re-trained; the embeddings of the
    human pairs are re-made."""
    from tests.tiny_project import copy_project

    project = copy_project(tiny_pipeline, tmp_path / "project")
    lock_before = (project / "dvc.lock").read_text()
    params_file = project / "params.yaml"
    params_file.write_text(params_file.read_text().replace("real_train_size: 200", "real_train_size: 150"))
    result = dvc(project, "repro", "embed_images")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ran = {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")}
    assert {"prepare", "gate_real", "embed_images"} <= ran
    assert "image_encoder" not in ran and "gate_pool" not in ran
    import yaml

    before, after = (yaml.safe_load(text)["stages"] for text in (lock_before, (project / "dvc.lock").read_text()))
    assert after["image_encoder"] == before["image_encoder"]
    pool = [o for o in after["prepare"]["outs"] if o["path"] == "data/prepared/unlabeled_pool"]
    assert pool == [o for o in before["prepare"]["outs"] if o["path"] == "data/prepared/unlabeled_pool"]


def test_make_run_with_nothing_stale_says_so_without_importing_prefect(pipeline: Path):
    """A no-op `make run` (python -m flows.run) is one `dvc status`: no Prefect server, no flow run, and
    Prefect not even imported (its import was most of a no-op's time); `python -m flows.pipeline` too
    answers without starting Prefect's server."""
    import sys

    from synth2.pipeline import STAGES
    from tests.tiny_project import project_env

    checkout = Path(__file__).resolve().parents[1]
    env = project_env(PYTHONPATH=f"{checkout / 'src'}:{checkout}", SYNTH2_TRACKING="0")
    n_stages = sum(len(stage.addresses()) for stage in STAGES)
    # `python -m flows.run`, telling afterwards whether Prefect was imported.
    probe = (
        "import runpy, sys\n"
        "try:\n    runpy.run_module('flows.run', run_name='__main__')\n"
        "except SystemExit as done:\n    assert not done.code, done.code\n"
        "print('prefect imported:', 'prefect' in sys.modules)\n"
    )
    outputs = {}
    for name, command in (("make run", ["-c", probe]), ("flows.pipeline", ["-m", "flows.pipeline"])):
        result = subprocess.run(
            [sys.executable, *command], cwd=pipeline, env=env, capture_output=True, text=True, timeout=300
        )
        outputs[name] = result.stdout + result.stderr
        assert result.returncode == 0, outputs[name][-3000:]
        assert f"all {n_stages} stage(s) up to date (dvc status), nothing ran" in outputs[name]
        assert "temporary server" not in outputs[name] and "Beginning flow run" not in outputs[name]
    assert "prefect imported: False" in outputs["make run"]
