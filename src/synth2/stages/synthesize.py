"""Stage `synthesize`: one image embedding per selected caption, from the prior.

Synthesis stays in embedding space, as in the paper: the captions of each selection (balanced and
unbalanced) go through the prior stage's model, a trained PriorTransformer (sampled with DDIM from
MiniLM caption embeddings) or a pretrained prior pipeline. The profile adds its report: how many pairs
show concepts no human pair shows, what the pixel-space path would cost (timings go to MLflow and the
log, not to the DVC metrics, which must not change from run to run), and a contact sheet.

Sampling the selections is sharded (`compute.shards`, synth2.compute): in this process, or on Ray workers
that each load the prior once (`compute.engine: ray`); one shard is the unsharded stage. The profile's
report (timings, sheet) runs in this process, unsharded.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np

from synth2 import paths, tracking
from synth2.compute.pool import ShardWork, shard_pool
from synth2.io import (
    load_output,
    read_parquet,
    require_dir,
    require_finite,
    require_rows,
    write_json,
    write_parquet,
    write_tensors,
)
from synth2.models.pretrained_prior import load_prior_pipeline, sample_prior_pipeline
from synth2.models.prior import load_prior, sample_prior
from synth2.params import Params
from synth2.pretrained import resolve_device, resolve_dtype
from synth2.profiles import PriorPipeline, Synthesizer, load_hooks
from synth2.stage import end_process, stage_main
from synth2.text_embed import embed_texts, load_model

log = logging.getLogger("synth2")


def embedding_synthesizer(params: Params, pipeline: PriorPipeline | None) -> Synthesizer:
    """captions, seed -> image embeddings [N, D] float32, from the prior stage's output."""
    prior_dir = require_dir(paths.PRIOR)
    steps, batch_size = params.prior.num_inference_steps, params.synthesize.batch_size
    if pipeline is None:
        prior, scheduler = load_output(prior_dir, "prior", lambda: load_prior(prior_dir))
        load_model()  # MiniLM, loaded here so that a Ray worker's start-up pays for it, not its first shard
        return lambda captions, seed: sample_prior(prior, scheduler, embed_texts(captions), steps, batch_size, seed)

    device = resolve_device(params.device)
    dtype = resolve_dtype(pipeline.dtype, device)
    loaded = load_prior_pipeline(prior_dir, pipeline.param, str(prior_dir), device, dtype)
    scale = pipeline.guidance_scale
    return lambda captions, seed: sample_prior_pipeline(loaded, captions, steps, scale, batch_size, seed)


def synthesize_shard(synthesize: Synthesizer, captions: list[str], seed: int) -> np.ndarray:
    return synthesize(captions, seed)


def run(params: Params) -> None:
    hooks = load_hooks(params, "synthesize")
    columns = list(hooks.SELECTION_COLUMNS)
    selections = {
        name: require_rows(read_parquet(path, columns=columns), path, ["caption"])
        for name, path in paths.SELECTIONS_BY_NAME.items()
    }
    work = ShardWork(
        partial(embedding_synthesizer, params, load_hooks(params, "prior").prior_pipeline(params)), (paths.PRIOR,)
    )

    synthetic, metrics = {}, {}
    with shard_pool(params.compute, work, "synthesize") as synthesizers:
        for name, table in selections.items():
            log.info("synthesising %d %s embeddings", len(table), name)
            embeddings = synthesizers.map(synthesize_shard, table["caption"].tolist(), params.seed)
            synthetic[name] = require_finite(embeddings, f"synthetic {name} embeddings")
            metrics[name] = {"pairs": len(table), "mean_norm": float(np.linalg.norm(embeddings, axis=1).mean())}
        synthesize_here = synthesizers.model_here()
    tracking.log_metrics({"compute": synthesizers.timings})
    report = hooks.synthesis_report(params, selections["balanced"], synthesize_here)
    metrics["balanced"] |= report.metrics

    for name, table in selections.items():
        write_tensors({"embeddings": synthetic[name]}, paths.synthetic_embeddings(name))
        write_parquet(table.reset_index(drop=True), paths.synthetic_captions(name))
    write_json(metrics, paths.SYNTHESIZE_METRICS)
    tracking.log_metrics({"speed": report.timings})
    log.info("synthesis timings: %s", {k: round(v, 3) for k, v in report.timings.items()})


main = stage_main("synthesize", run)

if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
