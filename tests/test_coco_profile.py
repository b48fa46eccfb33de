"""The coco profile end to end, offline, on tiny random Hugging Face models and a generated COCO dataset.

The caption LLM, the VLM's LM, CLIP and the Kandinsky prior are built by tests/tiny_hf.py and loaded from
local directories exactly as downloaded checkpoints would be; the dataset has missing and truncated images.
Two runs of every stage of dvc.yaml:

* `pipeline`: a real `dvc repro` in a git + DVC workspace, as a user runs the coco profile (dvc.yaml
  resolved for the profile, each stage its own `python -m synth2.stages.NAME` process, dvc.lock written):
  GPT-2 writes the captions, a Llama is the VLM's frozen LM with its top block trained, the prior is a
  PriorTransformer trained on the real pairs; untracked (test_pipeline.py does the same for the world);
* `tracked_pipeline`: in-process, in order (one import of torch/transformers for all stages, through the
  same stage frame as `python -m`), with MLflow tracking on, so MLflow records are asserted too: a Llama
  with a chat template writes the captions in bf16 and is also the VLM's LM, the prior is a pretrained
  KandinskyV22PriorPipeline and a KandinskyV22Pipeline decodes for the pixel-space timing.

Assertions are about contracts (shapes, dtypes, files, DVC state, MLflow records, one-line errors), not
quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from synth2 import paths
from synth2.pipeline import VARIANT_NAMES
from synth2.stage import run_stage
from tests import tiny_hf
from tests.conftest import default_params, write_params

CONCEPTS = ["dog", "traffic light", "pizza", "bus"]
PROMPT = "a photo of {concepts}"
UNPROMPTED = "a photo"
DVC = str(Path(sys.executable).with_name("dvc"))
N_IMAGES, N_MISSING, N_TRUNCATED = 22, 2, 1
TRUNCATED_FILE = f"{1000 + N_IMAGES - N_MISSING - 1:012d}.jpg"  # write_coco_dataset's naming


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints saved with save_pretrained, as a hub download would leave them."""
    root = tmp_path_factory.mktemp("models")
    vocab = tiny_hf.vocabulary(CONCEPTS, [PROMPT, UNPROMPTED])
    return {
        "gpt2": tiny_hf.save_causal_lm(root / "gpt2", "gpt2", vocab),
        "llama": tiny_hf.save_causal_lm(root / "llama", "llama", vocab, chat_template=True),
        "clip": tiny_hf.save_clip_vision(root / "clip"),
    }


def coco_params(data: Path, models: dict[str, Path], **overrides) -> dict:
    annotations, image_dir = tiny_hf.write_coco_dataset(
        data, CONCEPTS, N_IMAGES, missing=N_MISSING, truncated=N_TRUNCATED
    )
    concepts_file = data / "concepts.txt"
    concepts_file.write_text("\n".join(["# the tiny dataset's classes", *CONCEPTS]) + "\n")
    params = {
        "profile": "coco",
        "device": "cpu",
        "coco": {
            "prepare": {
                "annotations": str(annotations),
                "image_dir": str(image_dir),
                "concepts_file": str(concepts_file),
                "val_fraction": 0.1,
                "test_fraction": 0.25,
                "missing_images": "skip",
            },
            "caption_lm": {"pretrained": str(models["gpt2"])},
            "captions": {"max_words": 8},
            # Random LMs rarely name their concept: balance by the prompt's concept instead.
            "balance": {"require_concept_mention": False},
            "image_encoder": {"model": str(models["clip"]), "batch_size": 8},
            "train_vlm": {"lm_path": str(models["llama"])},
        },
        "captions": {
            "prompt_template": PROMPT,
            "unprompted_template": UNPROMPTED,
            "n_prompted": 32,
            "n_unprompted": 16,
            "max_new_tokens": 10,
            "batch_size": 16,
        },
        "balance": {"target_size": 16, "n_clusters": 4, "min_words": 1},
        "prior": {"steps": 20, "batch_size": 16, "num_inference_steps": 3, "attention_head_dim": 8, "num_layers": 1},
        "synthesize": {"timing_captions": 8, "batch_size": 16},
        "train_vlm": {
            "steps": 4,
            "batch_size": 8,
            "prefix_length": 2,
            "max_caption_tokens": 10,
            "freeze_lm": True,
            "unfreeze_top_layers": 1,
        },
        "evaluate": {"n_examples": 4, "batch_size": 8},
        "tracking": {"champion_metric": "overall.cider"},
        # Random LMs write short or empty captions and a random prior's samples are far from CLIP's norms:
        # the gates run, with thresholds that random models pass (their logic is tested in test_gates.py).
        "gates": {"caption_min_words": 1, "caption_min_valid_fraction": 0.5, "embedding_norm_slack": 100.0},
    }
    return deep_update(params, overrides)


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        base[key] = deep_update(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


STAGES = [
    ("check_params", "check_params", ()),
    ("prepare", "prepare", ()),
    ("gate_pool", "gate", ("pool",)),
    ("gate_real", "gate", ("real",)),
    ("caption_lm", "caption_lm", ()),
    ("captions", "captions", ()),
    ("gate_captions", "gate", ("captions",)),
    ("balance", "balance", ()),
    ("gate_balanced", "gate", ("balanced",)),
    ("image_encoder", "image_encoder", ()),
    ("embed_images", "embed_images", ()),
    ("prior", "prior", ()),
    ("synthesize", "synthesize", ()),
    ("gate_synthetic", "gate", ("synthetic",)),
    *((f"train_vlm@{v}", "train_vlm", (v,)) for v in VARIANT_NAMES),
    ("evaluate", "evaluate", ()),
]


def run_in_process(name: str, module: str, args: tuple[str, ...]) -> None:
    """One stage through synth2.stage.run_stage, as its `python -m synth2.stages.MODULE ARGS` would run it."""
    import importlib

    stage = importlib.import_module(f"synth2.stages.{module}")
    if module == "gate":
        run_stage(name, lambda params: stage.check(args[0], params))
    elif module == "train_vlm":
        run_stage(name, lambda params: stage.train_variant(args[0], params))
    else:
        run_stage(name, stage.run)


def stage_error(capsys, name: str, module: str, args: tuple[str, ...] = ()) -> str:
    """The one line a failing stage prints (it exits 1)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_in_process(name, module, args)
    assert info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def run_all_stages(workspace: Path, env: dict[str, str]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workspace)
        for key, value in {"HF_HUB_OFFLINE": "1", **env}.items():
            mp.setenv(key, value)
        for name, module, args in STAGES:
            run_in_process(name, module, args)


def dvc_workspace(workspace: Path) -> Path:
    """A git + DVC workspace holding dvc.yaml and the sources its stages run and declare."""
    import shutil

    from tests.conftest import ROOT

    shutil.copy(ROOT / "dvc.yaml", workspace)
    shutil.copytree(ROOT / "src", workspace / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"], [DVC, "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=workspace, check=True, capture_output=True)
    return workspace


def dvc(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    """The venv's dvc, untracked; stage commands find the venv's python first on PATH, as after
    `. .venv/bin/activate`."""
    from tests.conftest import stage_env

    env = stage_env() | {"SYNTH2_TRACKING": "0", "PATH": f"{Path(DVC).parent}:{os.environ['PATH']}"}
    return subprocess.run([DVC, *args], cwd=workspace, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, models) -> Path:
    workspace = dvc_workspace(tmp_path_factory.mktemp("coco_workspace"))
    write_params(workspace, coco_params(tmp_path_factory.mktemp("coco_data"), models))
    result = dvc(workspace, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workspace


@pytest.fixture(scope="module")
def tracked_pipeline(tmp_path_factory, models) -> tuple[Path, str]:
    """The second run, in-process in a git + DVC workspace (tracking reads dvc.yaml) with MLflow on."""
    workspace = dvc_workspace(tmp_path_factory.mktemp("coco_tracked"))
    kandinsky = tiny_hf.save_kandinsky_prior(tmp_path_factory.mktemp("kandinsky"))
    decoder = tiny_hf.save_kandinsky_decoder(tmp_path_factory.mktemp("kandinsky_decoder"))
    overrides = {
        "coco": {
            "caption_lm": {"pretrained": str(models["llama"])},
            "captions": {"chat_template": True, "dtype": "bf16"},
            "prior": {"kind": "pipeline", "pipeline": str(kandinsky), "guidance_scale": 2.0},
            "synthesize": {"decoder": str(decoder), "decoder_steps": 2, "decoder_image_size": 32},
            "train_vlm": {"lm_path": None},
        },
        "train_vlm": {"freeze_lm": False, "unfreeze_top_layers": 0, "mixed_precision": "bf16"},
    }
    write_params(workspace, coco_params(tmp_path_factory.mktemp("coco_data"), models, **overrides))
    uri = f"sqlite:///{workspace}/mlflow.db"
    run_all_stages(
        workspace,
        {
            "SYNTH2_TRACKING": "1",
            "SYNTH2_TRACKING_STRICT": "1",
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_DISABLE_TELEMETRY": "true",
        },
    )
    return workspace, uri


def test_prepare_reads_coco_into_the_world_tables_and_counts_missing_images(pipeline: Path):
    report = json.loads((pipeline / paths.PREPARE_METRICS).read_text())
    assert report["images"]["referenced"] == N_IMAGES
    assert report["images"]["missing"] == N_MISSING and report["images"]["unreadable"] == N_TRUNCATED
    assert report["images"]["skipped"] == N_MISSING + N_TRUNCATED
    # The truncated JPEG opens (its header is whole) but does not decode: prepare names it and drops it, so
    # image_encoder, which ran on every kept image, never saw it.
    [unreadable] = report["images"]["unreadable_files"]
    assert unreadable.startswith(f"{TRUNCATED_FILE}: OSError: image file is truncated")
    assert len(report["images"]["missing_files"]) == N_MISSING
    real = pd.read_parquet(pipeline / paths.REAL_TRAIN)
    test = pd.read_parquet(pipeline / paths.TEST)
    assert {"image_id", "caption", "file_name", "image_path"} <= set(real.columns)
    assert {"image_id", "references", "seen", "file_name", "image_path"} <= set(test.columns)
    assert not set(real["image_id"]) & set(test["image_id"])
    assert test["references"].map(len).min() >= 1 and test["seen"].dtype == bool
    assert pd.read_parquet(pipeline / paths.CONCEPTS)["concept"].tolist() == CONCEPTS
    n_usable = N_IMAGES - N_MISSING - N_TRUNCATED
    tables = [real, test, pd.read_parquet(pipeline / paths.VAL)]
    assert not any(t["file_name"].eq(TRUNCATED_FILE).any() for t in tables)
    assert real["image_id"].nunique() + len(test) + len(pd.read_parquet(pipeline / paths.VAL)) == n_usable


def test_snapshots_and_embeddings_have_the_declared_shapes(pipeline: Path):
    from transformers import AutoModelForCausalLM, CLIPVisionModelWithProjection

    assert type(AutoModelForCausalLM.from_pretrained(pipeline / paths.CAPTION_LM)).__name__ == "GPT2LMHeadModel"
    CLIPVisionModelWithProjection.from_pretrained(pipeline / paths.IMAGE_ENCODER)  # snapshot loads on its own
    real = pd.read_parquet(pipeline / paths.REAL_TRAIN)
    stored = load_file(str(pipeline / paths.REAL_EMBEDDINGS))
    assert stored["embeddings"].shape == (real["image_id"].nunique(), tiny_hf.EMBED_DIM)
    assert stored["embeddings"].dtype == np.float32 and stored["image_id"].dtype == np.int64
    for selection in paths.SELECTIONS_BY_NAME:
        synthetic = load_file(str(pipeline / paths.synthetic_embeddings(selection)))["embeddings"]
        captions = pd.read_parquet(pipeline / paths.synthetic_captions(selection))
        assert synthetic.shape == (len(captions), tiny_hf.EMBED_DIM)
        assert synthetic.dtype == np.float32 and np.isfinite(synthetic).all()
    assert (pipeline / paths.IMAGE_ENCODER_SHEET).stat().st_size > 0
    assert (pipeline / paths.SYNTHETIC_EXAMPLES).read_text().count("\n") > 2


def test_captions_are_cleaned_and_balanced_by_prompt_concept(pipeline: Path):
    prompted = pd.read_parquet(pipeline / paths.PROMPTED_CAPTIONS)
    assert len(prompted) == 32 and set(prompted["concept"]) == set(CONCEPTS)
    assert prompted["caption"].str.split().str.len().max() <= 8
    assert not prompted["caption"].str.contains(r"\.\s|\n").any()  # one sentence, one line
    balanced = pd.read_parquet(pipeline / paths.BALANCED)
    assert set(balanced["concept"]) <= set(CONCEPTS) and len(balanced) > 0


def test_vlm_uses_the_configured_lm_with_its_top_layer_trained(pipeline: Path, models):
    import torch
    from transformers import AutoModelForCausalLM

    from synth2.models.prefix_captioner import PrefixCaptioner

    for variant in VARIANT_NAMES:
        config = json.loads((pipeline / paths.vlm_dir(variant) / "prefix_captioner.json").read_text())
        assert config["freeze_lm"] and config["unfreeze_top_layers"] == 1
    model = PrefixCaptioner.load(pipeline / paths.vlm_dir("synth"))
    assert type(model.lm).__name__ == "LlamaForCausalLM"
    original = AutoModelForCausalLM.from_pretrained(models["llama"]).state_dict()
    changed = {name for name, value in model.lm.state_dict().items() if not torch.equal(value, original[name])}
    assert changed and all(name.startswith("model.layers.1.") for name in changed)  # the top block only


def test_evaluate_scores_cider_and_bleu_only(pipeline: Path):
    metrics = json.loads((pipeline / paths.EVAL_METRICS).read_text())
    for split in ("val", "test"):
        for variant in VARIANT_NAMES:
            for subset, values in metrics[split][variant].items():
                assert set(values) == {"bleu4", "cider"}, (split, variant, subset)
        assert set(metrics["gain_over_baseline"][split]) == {"synth", "synth_unbalanced"}
    assert metrics["champion"]["metric"] == "val.overall.cider"
    captions = pd.read_parquet(pipeline / paths.EVAL_CAPTIONS)
    assert len(captions) == len(pd.read_parquet(pipeline / paths.TEST))
    assert (pipeline / paths.EVAL_EXAMPLES).read_text().startswith("| file_name |")


def test_synth2_results_prints_the_coco_columns(pipeline: Path):
    synth2 = Path(sys.executable).with_name("synth2")
    result = subprocess.run([str(synth2), "results"], cwd=pipeline, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "| variant | test | CIDEr | BLEU-4 |"
    assert any(line.startswith("| synth | overall | ") for line in lines)
    assert "COCO-format data from" in result.stdout


def test_diversity_is_measured_against_the_coco_classes(pipeline: Path):
    diversity = json.loads((pipeline / paths.DIVERSITY_REPORT).read_text())
    # Balanced by prompt concept (random LMs rarely name their class), so every class is covered.
    assert diversity["balanced"]["concepts_total"] == len(CONCEPTS)
    assert diversity["balanced"]["concept_coverage"] == 1.0


def test_every_declared_dependency_and_output_exists(pipeline: Path):
    """What dvc.yaml declares for each stage, resolved for the coco profile, is what the stages read and write."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(pipeline)) as repo:
        for stage in repo.index.stages:
            for dep in stage.deps:
                if not isinstance(dep, ParamsDependency):
                    assert (pipeline / dep.def_path).exists(), f"{stage.name}: dep {dep.def_path} missing"
            for out in stage.outs:
                assert (pipeline / out.def_path).exists(), f"{stage.name}: out {out.def_path} missing"


def stale_stages(workspace: Path) -> set[str]:
    """Stages DVC would re-run, but check_params: it depends on the whole params.yaml and re-runs on every
    edit, rewriting the same marker, so nothing downstream re-runs for it."""
    status = dvc(workspace, "status", "--json")
    assert status.returncode == 0, status.stderr
    return set(json.loads(status.stdout)) - {"check_params"}


def test_dvc_repro_leaves_the_pipeline_up_to_date_and_only_coco_keys_re_run_stages(pipeline: Path):
    assert stale_stages(pipeline) == set()
    params_file = pipeline / "params.yaml"
    original = params_file.read_text()
    try:
        params_file.write_text(original.replace("zipf_a: 1.0", "zipf_a: 1.5"))  # a world key
        assert stale_stages(pipeline) == set()
        params_file.write_text(original.replace("require_concept_mention: false", "require_concept_mention: true"))
        assert stale_stages(pipeline) == {"balance"}
    finally:
        params_file.write_text(original)


def test_llama_with_chat_template_writes_the_captions_in_bf16(tracked_pipeline):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth2.coco.captions import chat_prompts

    workspace, _ = tracked_pipeline
    assert type(AutoModelForCausalLM.from_pretrained(workspace / paths.CAPTION_LM)).__name__ == "LlamaForCausalLM"
    prompted = pd.read_parquet(workspace / paths.PROMPTED_CAPTIONS)
    assert len(prompted) == 32 and prompted["caption"].str.split().str.len().max() <= 8
    tokenizer = AutoTokenizer.from_pretrained(workspace / paths.CAPTION_LM)
    assert chat_prompts(tokenizer, ["a photo of dog"]) == ["a photo of dog caption:"]  # <bos> left to the tokenizer
    assert set(prompted["dtype"]) == {"bfloat16"} and set(prompted["device"]) == {"cpu"}


def test_kandinsky_prior_pipeline_synthesises_clip_sized_embeddings(tracked_pipeline):
    from diffusers import DiffusionPipeline

    workspace, _ = tracked_pipeline
    assert type(DiffusionPipeline.from_pretrained(workspace / paths.PRIOR)).__name__ == "KandinskyV22PriorPipeline"
    metrics = json.loads((workspace / paths.PRIOR_METRICS).read_text())
    assert metrics["pipeline"] == "KandinskyV22PriorPipeline" and metrics["embedding_dim"] == tiny_hf.EMBED_DIM
    synthetic = load_file(str(workspace / paths.synthetic_embeddings("balanced")))["embeddings"]
    assert synthetic.shape[1] == tiny_hf.EMBED_DIM and synthetic.dtype == np.float32 and np.isfinite(synthetic).all()
    evaluate = json.loads((workspace / paths.EVAL_METRICS).read_text())
    assert set(evaluate["test"]["synth"]["overall"]) == {"bleu4", "cider"}


def test_pixel_path_is_timed_through_the_decoder_only_when_one_is_configured(pipeline: Path, tracked_pipeline):
    from mlflow import MlflowClient

    workspace, uri = tracked_pipeline
    with_decoder = json.loads((workspace / paths.SYNTHESIZE_METRICS).read_text())["balanced"]
    assert "round_trip_cosine" in with_decoder  # its value depends on the tiny random decoder: no claim on it
    assert (workspace / paths.SYNTHETIC_SHEET).stat().st_size > 0
    # Timings differ from run to run: MLflow has them, the DVC metrics do not.
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("synth2")
    [run] = client.search_runs([experiment.experiment_id], filter_string="tags.`synth2.stage` = 'synthesize'")
    assert run.data.metrics["speed.captions"] == 8 and run.data.metrics["speed.pixel_over_embedding_time"] > 0
    assert not any("seconds" in key or "per_s" in key for key in json.dumps(with_decoder).split('"'))
    without = json.loads((pipeline / paths.SYNTHESIZE_METRICS).read_text())["balanced"]
    assert without["pixel_path"].startswith("not configured") and "round_trip_cosine" not in without
    assert not (pipeline / paths.SYNTHETIC_SHEET).exists()


def test_mlflow_records_every_stage_with_lineage_models_and_the_champion(tracked_pipeline):
    from mlflow import MlflowClient

    workspace, uri = tracked_pipeline
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("synth2")
    runs = {r.data.tags["synth2.stage"]: r for r in client.search_runs([experiment.experiment_id], max_results=100)}
    assert set(runs) == {name for name, _, _ in STAGES}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert runs["prepare"].data.params["profile"] == "coco"
    assert runs["captions"].data.params["coco.captions.dtype"] == "bf16"
    assert "world.caption_lm.steps" not in runs["caption_lm"].data.params  # the profile's own keys only
    assert any(k.startswith("dvc.out.models/caption_lm") for k in runs["caption_lm"].data.tags)
    assert {"test.synth.overall.cider", "val.baseline.overall.bleu4"} <= set(runs["evaluate"].data.metrics)
    assert not any("attr_" in key for key in runs["evaluate"].data.metrics)
    assert runs["embed_images"].data.metrics["images.real_train"] > 0
    logged = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert {"caption_lm", "prior"} <= {m.name for m in logged}
    champion = client.get_model_version_by_alias("synth2-vlm", "champion")
    assert champion.tags["variant"] == json.loads((workspace / paths.EVAL_METRICS).read_text())["champion"]["variant"]
    # The first registration sets the alias; evaluate's run keeps every variant's per-image validation
    # scores for the next run to bootstrap its margin over this champion.
    evaluate = runs["evaluate"]
    assert evaluate.data.tags["synth2.champion.reason"].endswith("is the first champion of synth2-vlm")
    assert champion.tags["synth2.validation_scores.run"] == evaluate.info.run_id
    path = client.download_artifacts(evaluate.info.run_id, "champion/validation_scores.json")
    evidence = json.loads(Path(path).read_text())
    val = pd.read_parquet(workspace / paths.VAL)
    assert evidence["metric"] == "val.overall.cider" and set(evidence["scores"]) == set(VARIANT_NAMES)
    assert all(set(s) == {str(i) for i in val["image_id"]} for s in evidence["scores"].values())


# ------------------------------------------------------------------------------------ one-line errors


@pytest.fixture
def coco_workspace(tmp_path: Path, models, monkeypatch: pytest.MonkeyPatch):
    def make(**overrides) -> Path:
        write_params(tmp_path, coco_params(tmp_path / "data", models, **overrides))
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("SYNTH2_TRACKING", "0")
        return tmp_path

    return make


def test_missing_model_path_names_the_param(coco_workspace, capsys):
    coco_workspace(coco={"caption_lm": {"pretrained": "/nonexistent/llm"}})
    line = stage_error(capsys, "caption_lm", "caption_lm")
    assert "coco.caption_lm.pretrained" in line and "/nonexistent/llm" in line and "local directory" in line


def test_hub_id_offline_without_a_cached_copy_says_how_to_point_at_a_directory(coco_workspace, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    coco_workspace(coco={"image_encoder": {"model": "synth2-tests/no-such-clip"}})
    run_in_process("prepare", "prepare", ())
    line = stage_error(capsys, "image_encoder", "image_encoder")
    assert line.startswith("error: stage 'image_encoder': coco.image_encoder.model: 'synth2-tests/no-such-clip'")
    assert "HF_HUB_OFFLINE=1" in line and "set coco.image_encoder.model: DIR, a local directory" in line


@pytest.mark.parametrize("value", ["models/clip-typo", "./clip", "../clip", "~/no-such-clip", "a/b/c", "nested/clip"])
def test_a_local_looking_path_that_does_not_exist_is_a_missing_directory_not_a_hub_id(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from synth2.pretrained import PretrainedError, resolve_source

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "models").mkdir()  # a project folder: "models/..." is a path, not the hub org "models"
    (tmp_path / "nested").mkdir()
    with pytest.raises(PretrainedError) as info:
        resolve_source(value, "coco.image_encoder.model")
    message = str(info.value)
    assert message.startswith(f"coco.image_encoder.model: no local directory at '{value}'"), message
    assert "hub" not in message.split(";")[0] and "\n" not in message


def test_a_hub_looking_id_still_goes_to_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from synth2.pretrained import PretrainedError, resolve_source

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedError, match="'synth2-tests/no-such-clip' is not a local directory and the hub"):
        resolve_source("synth2-tests/no-such-clip", "coco.image_encoder.model")


def test_an_image_that_fails_to_decode_is_fatal_under_missing_images_fail(tmp_path: Path):
    from synth2.coco.dataset import CocoError

    with pytest.raises(CocoError) as info:
        build_tiny_coco(
            tmp_path,
            edit=lambda raw, images: tiny_hf.truncate_image(images / "000000001003.jpg"),
            missing_images="fail",
        )
    message = str(info.value)
    assert "references 0 missing and 1 unreadable images" in message and "000000001003.jpg: OSError" in message
    assert "truncated" in message and "coco.prepare.missing_images: skip" in message and "\n" not in message


def test_an_image_changed_after_prepare_is_named_by_embed_images(coco_workspace, capsys):
    workspace = coco_workspace()
    run_in_process("prepare", "prepare", ())
    run_in_process("image_encoder", "image_encoder", ())
    victim = pd.read_parquet(workspace / paths.REAL_TRAIN)["image_path"].iloc[0]
    tiny_hf.truncate_image(Path(victim))
    line = stage_error(capsys, "embed_images", "embed_images")
    assert line.startswith(f"error: stage 'embed_images': cannot read image '{victim}' (OSError: image file is")
    assert "dvc repro -f prepare" in line


def test_a_world_champion_metric_stops_the_params_check_and_prepare_before_they_work(coco_workspace, capsys):
    """The params check (first under dvc repro and make run) and prepare (the first stage that reads the
    data) both refuse a metric only the shapes world scores."""
    workspace = coco_workspace(tracking={"champion_metric": "unseen.attr_all"})
    line = stage_error(capsys, "check_params", "check_params")
    assert line.startswith("error: stage 'check_params': params.yaml: tracking.champion_metric: 'unseen.attr_all': ")
    assert "pick one of overall.cider, seen.cider, unseen.cider" in line
    assert not (workspace / paths.PARAMS_CHECK).exists()
    line = stage_error(capsys, "prepare", "prepare")
    assert line.startswith("error: stage 'prepare': tracking.champion_metric: 'unseen.attr_all': the coco profile")
    assert not (workspace / paths.PREPARED).exists()


def test_a_coco_run_without_a_caption_llm_stops_at_the_params_check(coco_workspace, capsys):
    workspace = coco_workspace(coco={"caption_lm": {"pretrained": ""}})
    line = stage_error(capsys, "check_params", "check_params")
    assert line.startswith("error: stage 'check_params': params.yaml: coco.caption_lm.pretrained is not set: the coco")
    assert not (workspace / paths.PARAMS_CHECK).exists()


def test_a_champion_metric_of_an_empty_validation_subset_fails_in_prepare_and_in_evaluate(coco_workspace, capsys):
    import yaml

    # Every class of the tiny dataset is named by some training caption: no validation image is "unseen".
    workspace = coco_workspace(tracking={"champion_metric": "unseen.cider"})
    line = stage_error(capsys, "prepare", "prepare")
    expected = (
        "tracking.champion_metric: 'unseen.cider': the validation split has no 'unseen' images; "
        "pick one of overall.cider, seen.cider"
    )
    assert line == f"error: stage 'prepare': {expected}"
    # Set after prepare ran (DVC re-runs only evaluate for this key): evaluate stops before captioning,
    # so before it would look for the VLMs, none of which exist here.
    params_file = workspace / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params_file.write_text(
        yaml.safe_dump(params | {"tracking": params["tracking"] | {"champion_metric": "overall.cider"}})
    )
    run_in_process("prepare", "prepare", ())
    run_in_process("image_encoder", "image_encoder", ())
    run_in_process("embed_images", "embed_images", ())
    params_file.write_text(yaml.safe_dump(params))
    assert stage_error(capsys, "evaluate", "evaluate") == f"error: stage 'evaluate': {expected}"


def test_missing_images_can_be_fatal(coco_workspace, capsys):
    coco_workspace(coco={"prepare": {"missing_images": "fail"}})
    line = stage_error(capsys, "prepare", "prepare")
    assert f"references {N_MISSING} missing and 0 unreadable images" in line
    assert "coco.prepare.missing_images: skip" in line


# ------------------------------------------------------------------------------------- small pieces


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('Caption: "A dog runs on the beach. It is sunny."', "A dog runs on the beach."),
        ("Sure! Here is a short caption: a cat on a mat", "a cat on a mat"),
        ("**A red bus at night**", "A red bus at night"),
        (", one two three four five six seven eight nine", "one two three four five six seven eight"),
    ],
)
def test_llm_output_is_cleaned_to_one_short_caption(raw: str, expected: str):
    from synth2.coco.captions import clean_caption

    assert clean_caption(raw, max_words=8) == expected


def test_concept_mentions_are_whole_words_with_plurals():
    from synth2.coco.concepts import first_mention, mentions

    assert mentions("Two dogs and a bus", "dog") and mentions("two buses", "bus") and not mentions("a hotdog", "dog")
    assert first_mention("a hot dog next to a dog", ["dog", "hot dog"]) == "hot dog"
    assert first_mention("a bench", CONCEPTS) is None


def test_split_file_decides_the_splits_and_seen_follows_the_human_captions(tmp_path: Path):
    from synth2.coco.dataset import build_coco

    annotations, image_dir = tiny_hf.write_coco_dataset(tmp_path, CONCEPTS, 8)
    # Images cycle through CONCEPTS: 1000 and 1004 show a dog, 1002 and 1006 pizza.
    split = {"train": [1000, 1001, 1003], "val": [1005], "test": [1004, 1006]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    concepts_file = tmp_path / "concepts.txt"
    concepts_file.write_text("\n".join(CONCEPTS))
    prepare = {
        "annotations": str(annotations),
        "image_dir": str(image_dir),
        "concepts_file": str(concepts_file),
        "split_file": str(tmp_path / "split.json"),
    }
    data = build_coco(default_params({"coco": {"prepare": prepare}}).coco.prepare, seed=0)
    assert sorted(data.real_train["image_id"].unique()) == split["train"]
    assert data.val["image_id"].tolist() == split["val"] and sorted(data.test["image_id"]) == split["test"]
    assert dict(zip(data.test["image_id"], data.test["seen"])) == {
        1004: True,
        1006: False,
    }  # no training caption names pizza
    assert data.report["split"] == "file" and data.report["concepts_in_real_train"] == 3


def build_tiny_coco(root: Path, n_images: int = 12, edit=None, **prepare):
    """build_coco on a generated dataset; `edit(raw_json, image_dir)` corrupts it first."""
    from synth2.coco.dataset import build_coco

    annotations, image_dir = tiny_hf.write_coco_dataset(root, CONCEPTS, n_images)
    if edit:
        raw = json.loads(annotations.read_text())
        edit(raw, image_dir)
        annotations.write_text(json.dumps(raw))
    concepts_file = root / "concepts.txt"
    concepts_file.write_text("\n".join(CONCEPTS))
    files = {"annotations": str(annotations), "image_dir": str(image_dir), "concepts_file": str(concepts_file)}
    return build_coco(default_params({"coco": {"prepare": files | prepare}}).coco.prepare, seed=0)


def test_null_empty_and_non_text_captions_are_skipped_counted_and_named(tmp_path: Path, caplog):
    def edit(raw: dict, _) -> None:
        for annotation, value in zip(raw["annotations"], [None, "   ", 7]):
            annotation["caption"] = value  # annotation ids 1, 2, 3

    data = build_tiny_coco(tmp_path, edit=edit)
    texts = data.real_train["caption"].tolist() + [
        r for t in (data.val, data.test) for refs in t["references"] for r in refs
    ]
    assert not {"None", "", "7"} & set(texts)
    assert data.report["captions"] == {
        "annotations": 36,
        "skipped": 3,
        "null": 1,
        "empty": 1,
        "not_text": 1,
        "skipped_annotation_ids": [1, 2, 3],
    }
    warning = [r.getMessage() for r in caplog.records if "captions that are null" in r.getMessage()]
    assert len(warning) == 1 and "annotation ids 1, 2, 3" in warning[0] and "\n" not in warning[0]
