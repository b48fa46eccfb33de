"""The results table of the README: baseline vs synthetic variants, seen and unseen, from DVC metrics."""

from __future__ import annotations

from synth2 import paths
from synth2.io import read_json
from synth2.params import load_params

COLUMNS = [
    ("attr_colour_shape", "colour+shape"),
    ("attr_all", "all attributes"),
    ("cider", "CIDEr"),
    ("bleu4", "BLEU-4"),
]
SPLITS = ("seen", "unseen", "overall")


def results_table() -> str:
    metrics = read_json(paths.EVAL_METRICS, "evaluate")
    params = load_params()
    header = "| variant | split | " + " | ".join(name for _, name in COLUMNS) + " |"
    lines = [header, "|---|---|" + "---:|" * len(COLUMNS)]
    for variant in paths.VLM_VARIANTS:
        for split in SPLITS:
            values = metrics[variant].get(split)
            if values:
                cells = " | ".join(f"{values[key]:.3f}" for key, _ in COLUMNS)
                lines.append(f"| {variant} | {split} | {cells} |")
    w, v, b = params.world, params.train_vlm, params.balance
    lines.append("")
    lines.append(
        f"Run: seed {params.seed}; {w.real_train_size} real pairs (Zipf a={w.zipf_a}, "
        f"{w.holdout_fraction:.0%} of colour-shape combinations held out); {b.target_size} balanced synthetic "
        f"captions; prior {params.prior.steps} steps, {params.prior.num_inference_steps} sampling steps; "
        f"VLM {v.steps} steps, batch {v.batch_size}, mix ratio {v.mix_ratio}, "
        f"LM {'frozen' if v.freeze_lm else 'fine-tuned'}; "
        f"test: {w.test_per_combo} images per combination."
    )
    return "\n".join(lines)
