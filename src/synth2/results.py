"""The README's results table: baseline vs synthetic variants, seen and unseen, from the DVC metrics."""

from __future__ import annotations

from synth2 import paths
from synth2.io import read_json
from synth2.params import load_params
from synth2.profiles import load_profile

SPLITS = ("seen", "unseen", "overall")


def results_table() -> str:
    metrics = read_json(paths.EVAL_METRICS, "evaluate")
    params = load_params()
    profile = load_profile(params)
    columns = profile.RESULT_COLUMNS
    header = "| variant | split | " + " | ".join(name for _, name in columns) + " |"
    lines = [header, "|---|---|" + "---:|" * len(columns)]
    for variant in paths.VLM_VARIANTS:
        for split in SPLITS:
            values = metrics.get(variant, {}).get(split)
            if values:
                cells = " | ".join(f"{values[key]:.3f}" if key in values else "n/a" for key, _ in columns)
                lines.append(f"| {variant} | {split} | {cells} |")
    v, b = params.train_vlm, params.balance
    run = (
        f"Run: seed {params.seed}; {profile.data_description(params)}; {b.target_size} balanced synthetic "
        f"captions; prior {params.prior.steps} steps, {params.prior.num_inference_steps} sampling steps; "
        f"VLM {v.steps} steps, batch {v.batch_size}, mix ratio {v.mix_ratio}, "
        f"LM {'frozen' if v.freeze_lm else 'fine-tuned'}."
    )
    return "\n".join([*lines, "", run])
