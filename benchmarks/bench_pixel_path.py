"""The pixel path's cost against the embedding path's, at params.yaml's model sizes, without a pipeline run.

    .venv/bin/python benchmarks/bench_pixel_path.py --captions 512 [--decoder-steps 10] [--out FILE]

Builds the prior, the image encoder and the pixel decoder at the sizes params.yaml gives them (untrained:
a forward pass costs the same whatever the weights), writes world captions, and times them with
pixel_synthesize's own code (`synthesis_paths`, `time_paths`): prior -> embedding against prior -> decoder
-> pixels -> image encoder on the same captions, on one torch thread (the stages' default). Prints the
timings and the load average before and after, the machine's other work being part of the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from synth2.models.autoencoder import Autoencoder, AutoencoderConfig
from synth2.models.pixel_decoder import PixelDecoder, PixelDecoderConfig, parameter_count
from synth2.models.prior import PriorConfig, build_prior, build_scheduler, set_normalisation
from synth2.params import load_params, parse_with_overrides, read_document
from synth2.stages.pixel_synthesize import synthesis_paths, time_paths
from synth2.world.grammar import caption
from synth2.world.scenes import COLOURS, SHAPES, sample_scene

ROOT = Path(__file__).resolve().parents[1]


def world_captions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, COLOURS[i % len(COLOURS)], SHAPES[i % len(SHAPES)], 0.2) for i in range(n)]
    return [caption(scene, "human", rng) for scene in scenes]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=512)
    parser.add_argument("--decoder-steps", type=int, help="pixel_space.num_inference_steps (default: params.yaml)")
    parser.add_argument("--out", type=Path, help="also write the report here as JSON")
    args = parser.parse_args(argv)
    overrides = {"pixel_space.num_inference_steps": args.decoder_steps} if args.decoder_steps else {}
    params = (
        parse_with_overrides(read_document(ROOT / "params.yaml"), overrides)
        if overrides
        else load_params(ROOT / "params.yaml")
    )
    torch.manual_seed(params.seed)
    torch.set_num_threads(int(os.environ.get("SYNTH2_TORCH_THREADS", "1")))
    embed_dim, size = params.world.image_encoder.embed_dim, params.world.prepare.image_size
    p = params.prior
    prior_config = PriorConfig(p.num_layers, p.num_attention_heads, p.attention_head_dim, p.num_train_timesteps)
    prior = build_prior(prior_config, image_dim=embed_dim).eval()
    set_normalisation(prior, torch.randn(256, embed_dim))
    d = params.pixel_space.decoder
    decoder = PixelDecoder(
        PixelDecoderConfig(size, embed_dim, tuple(d.channels), d.layers_per_block, d.num_train_timesteps)
    ).eval()
    encoder = Autoencoder(AutoencoderConfig(image_size=size, embed_dim=embed_dim)).eval()
    embedding_path, pixel_path = synthesis_paths(params, prior, build_scheduler(prior_config), decoder, encoder)

    load_before = os.getloadavg()
    timings = time_paths(world_captions(args.captions, params.seed), embedding_path, pixel_path)
    report = timings | {
        "prior_steps": p.num_inference_steps,
        "decoder_steps": params.pixel_space.num_inference_steps,
        "decoder_parameters": parameter_count(decoder),
        "prior_parameters": sum(x.numel() for x in prior.parameters()),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
