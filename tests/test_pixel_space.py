"""The pixel path (README "Embedding space vs pixel space"): the diffusion decoder, the stages that params
switch on, the synth_pixel variant and where its timings go."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from synth2 import paths
from synth2.pipeline import STAGES, outputs
from tests.tiny_project import commit_all, copy_project, dvc

PIXEL_STAGES = ("pixel_decoder@synth_pixel", "pixel_synthesize@synth_pixel", "pixel_vlm@synth_pixel")


def coloured_squares(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n 32-px images, each a square of one of four colours at one of four places, and a one-hot
    embedding of (colour, place): what a decoder conditioned on the embedding can learn to draw."""
    rng = np.random.default_rng(seed)
    colours = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], np.uint8)
    images = np.zeros((n, 32, 32, 3), np.uint8)
    embeddings = np.zeros((n, 8), np.float32)
    for i in range(n):
        colour, place = rng.integers(4), rng.integers(4)
        row, col = divmod(int(place), 2)
        images[i, row * 16 + 2 : row * 16 + 14, col * 16 + 2 : col * 16 + 14] = colours[colour]
        embeddings[i, colour] = embeddings[i, 4 + place] = 1.0
    return images, embeddings


def test_the_decoder_learns_and_decodes_embeddings_to_images_of_the_pool_size(tmp_path: Path):
    from synth2.models import pixel_decoder as pd_

    images, embeddings = coloured_squares(256)
    config = pd_.PixelDecoderConfig(image_size=32, embed_dim=8, channels=(8, 16, 16))
    model, losses = pd_.train_pixel_decoder(images, embeddings, config, pd_.training_config(120, 32, 3e-3), seed=0)
    # Noise prediction starts near 1 ("predicts nothing") and falls as the UNet learns the images.
    assert np.mean(losses[:10]) > 0.8 and np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10])

    pd_.save_pixel_decoder(model, tmp_path / "decoder")
    loaded = pd_.load_pixel_decoder(tmp_path / "decoder")
    decoded = pd_.decode_pixels(loaded, embeddings[:5], num_inference_steps=4, batch_size=2, seed=1)
    assert decoded.shape == (5, 32, 32, 3) and decoded.dtype == np.uint8
    again = pd_.decode_pixels(model, embeddings[:5], num_inference_steps=4, batch_size=2, seed=1)
    assert np.array_equal(decoded, again)  # the saved model is the trained one; sampling is seeded


def with_pixel_path(params: dict, variants: dict[str, str]) -> dict:
    return params | {"pixel_space": params["pixel_space"] | {"variants": variants}}


def test_the_pixel_stages_exist_only_while_params_list_the_variant(tmp_path: Path):
    """Off by default: DVC resolves no pixel stage from the committed dvc.yaml and params.yaml; listing
    synth_pixel adds the three, and the description (addresses, producer) agrees with DVC."""
    from synth2.dvc_yaml import DVC_YAML, ROOT, resolved_stages

    default = yaml.safe_load((ROOT / "params.yaml").read_text())
    on = tmp_path / "params.yaml"
    on.write_text(yaml.safe_dump(with_pixel_path(default, {"synth_pixel": "balanced"})))
    stages_off, _ = resolved_stages(DVC_YAML, ROOT / "params.yaml", "world", tmp_path / "off")
    stages_on, needs = resolved_stages(DVC_YAML, on, "world", tmp_path / "on")

    assert not [s for s in stages_off if s.startswith("pixel_")]
    assert set(stages_on) - set(stages_off) == set(PIXEL_STAGES)
    assert needs["pixel_vlm@synth_pixel"] >= {"pixel_synthesize@synth_pixel"}
    assert needs["pixel_synthesize@synth_pixel"] >= {"pixel_decoder@synth_pixel", "synthesize", "prior"}
    described = {address for stage in STAGES for address in stage.addresses(yaml.safe_load(on.read_text()))}
    assert described == set(stages_on)
    assert sum(len(stage.addresses(default)) for stage in STAGES) == len(stages_off)
    pixel_doc = with_pixel_path(default, {"synth_pixel": "balanced"})
    scores_dir = paths.pixel_vlm_per_image("synth_pixel").parent
    assert outputs(pixel_doc)[scores_dir] == "pixel_vlm@synth_pixel"  # what producer() names from params.yaml
    assert scores_dir not in outputs(default)  # no such stage while the path is off


def lock_stages(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]


@pytest.mark.slow
def test_switching_the_pixel_path_on_runs_its_stages_only_and_keeps_its_timings_out_of_dvc(
    tiny_pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`pixel_space.variants: {synth_pixel: balanced}` + `dvc repro` runs the three pixel stages and nothing else;
    synth_pixel is scored in evaluate's per-image format; the timings land in MLflow (where the study reads
    them) and an untracked file, in no DVC-tracked output, so a second `dvc repro` has nothing to do."""
    from mlflow import MlflowClient

    from synth2.study.speed import pixel_speed

    project = copy_project(tiny_pipeline, tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(
        yaml.safe_dump(with_pixel_path(params, {"synth_pixel": "balanced"}), sort_keys=False)
    )
    commit_all(project, "pixel path on")
    lock_before = lock_stages(project)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracked = {"SYNTH2_TRACKING": "1", "SYNTH2_TRACKING_STRICT": "1", "MLFLOW_TRACKING_URI": store}
    result = dvc(project, "repro", DVC_EXP_NAME="pixel-test", **tracked)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]

    ran = {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")}
    assert ran == {"check_params", *PIXEL_STAGES}  # the check runs on any edit of params.yaml
    lock_after = lock_stages(project)
    assert {k: v["outs"] for k, v in lock_after.items() if k not in PIXEL_STAGES} == {
        k: v["outs"] for k, v in lock_before.items()
    }

    # synth_pixel: synth's captions, their embeddings through pixels, scored as evaluate scores variants.
    pixel = project / paths.pixel_synthetic_dir("synth_pixel")
    synth_captions = pd.read_parquet(project / paths.synthetic_captions("balanced"))
    assert pd.read_parquet(pixel / "captions.parquet").equals(synth_captions)
    from safetensors.numpy import load_file

    synth = load_file(project / paths.synthetic_embeddings("balanced"))["embeddings"]
    re_encoded = load_file(pixel / "embeddings.safetensors")["embeddings"]
    assert re_encoded.shape == synth.shape and not np.allclose(re_encoded, synth)
    evaluated = pd.read_parquet(project / paths.EVAL_PER_IMAGE)
    scored = pd.read_parquet(project / paths.pixel_vlm_per_image("synth_pixel"))
    assert list(scored.columns) == list(evaluated.columns) and set(scored["variant"]) == {"synth_pixel"}
    synth_rows = evaluated[evaluated["variant"] == "synth"]
    assert len(scored) == len(synth_rows) and set(scored["image_id"]) == set(synth_rows["image_id"])
    scores = json.loads((project / paths.pixel_vlm_scores("synth_pixel")).read_text())
    for split in ("val", "test"):
        rows = scored[(scored["split"] == split) & (scored["subset"] == "overall")]
        assert scores[split]["overall"]["cider"] == pytest.approx(rows["cider"].mean())

    # The timings: in the untracked report and the stage's MLflow run, never in what DVC tracks.
    timings = json.loads((project / paths.pixel_timings("synth_pixel")).read_text())
    assert timings["captions"] == params["synthesize"]["timing_captions"] and timings["pixel_seconds"] > 0
    locked = json.dumps({k: lock_after[k] for k in PIXEL_STAGES})
    assert "timings" not in locked
    for stage in PIXEL_STAGES:
        for metrics in lock_after[stage].get("outs") or []:
            path = project / metrics["path"]
            if path.is_file() and path.suffix == ".json":
                assert "seconds" not in path.read_text() and "per_s" not in path.read_text(), path
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(params["tracking"]["experiment"])
    runs = client.search_runs([experiment.experiment_id], "tags.`synth2.stage` = 'pixel_synthesize@synth_pixel'")
    assert len(runs) == 1
    recorded = runs[0].data.metrics
    assert recorded["speed.pixel_over_embedding_time"] == pytest.approx(timings["pixel_over_embedding_time"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    speed = pixel_speed(project, ["pixel-test", "another-experiment"])
    assert speed["experiments"] == ["pixel-test"]
    assert speed["pixel_over_embedding_time"]["values"] == [pytest.approx(timings["pixel_over_embedding_time"])]

    status = dvc(project, "status", "--quiet")
    assert status.returncode == 0, status.stdout  # nothing is stale: the timings are no output


def test_a_study_reports_synth_pixel_against_synth_when_every_seed_has_it():
    """synth2.study.stats: `synth_pixel - synth` paired by seed and by image, with both intervals, once
    every seed has the variant; a seed without it (the pixel path off) leaves the comparison out."""
    from synth2.pipeline import COMPARISONS, PIXEL_COMPARISONS, VARIANT_NAMES
    from synth2.study.stats import aggregate, comparisons_present
    from tests.test_study_stats import seed_result

    def aggregate_with_pixel(results):  # as synth2.study.workflow does
        pixel = comparisons_present(results, PIXEL_COMPARISONS)
        return aggregate(results, (*VARIANT_NAMES, *(v for _, v, _ in pixel)), (*COMPARISONS, *pixel))

    def with_pixel(result: tuple[dict, pd.DataFrame], cider: float) -> tuple[dict, pd.DataFrame]:
        metrics, rows = result
        for split in metrics:
            metrics[split]["synth_pixel"] = {s: {"cider": cider} for s in metrics[split]["synth"]}
        synth = rows[rows["variant"] == "synth"]
        pixel = synth.assign(
            variant="synth_pixel", cider=synth["cider"] - metrics["test"]["synth"]["overall"]["cider"] + cider
        )
        return metrics, pd.concat([rows, pixel], ignore_index=True)

    cider = {"baseline": 1.0, "synth": 1.5, "synth_unbalanced": 1.2}
    results = {seed: with_pixel(seed_result(cider, seed=seed), 1.5 - 0.1 * (seed + 1)) for seed in (0, 1, 2)}
    out = aggregate_with_pixel(results)
    diff = out["differences"]["synth_pixel - synth"]["test"]["overall"]["cider"]
    assert diff["values"] == pytest.approx([-0.1, -0.2, -0.3]) and diff["ci95"][0] < -0.2 < diff["ci95"][1]
    assert diff["bootstrap_ci95"][0] <= -0.2 <= diff["bootstrap_ci95"][1]
    assert "synth_pixel" in out["summary"]["test"]

    results[1] = seed_result(cider, seed=1)  # one experiment ran without the pixel path
    assert "synth_pixel - synth" not in aggregate_with_pixel(results)["differences"]


def test_the_study_report_states_the_speed_ratio_or_why_there_is_none():
    from synth2.study.report import speed_markdown
    from synth2.study.stats import summarise

    measured = {
        "experiments": ["px-0", "px-1"],
        "pixel_over_embedding_time": summarise([4.0, 6.0]),
        "embedding_captions_per_s": summarise([80.0, 90.0]),
        "pixel_captions_per_s": summarise([20.0, 15.0]),
        "captions": 512,
        "decoder_parameters": 1071971,
        "decoder_steps": 10,
    }
    text = "\n".join(speed_markdown({"label": "default", "pixel_speed": measured}))
    assert "2 experiment(s) on 512 captions" in text and "5.00 ± 12.71" in text and "the paper: 1.33" in text
    none = "\n".join(speed_markdown({"label": "default", "pixel_speed": {"experiments": []}}))
    assert "no timing in MLflow" in none
    assert speed_markdown({"label": "default"}) == []  # the pixel path was off: no section
