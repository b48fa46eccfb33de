"""The README's results table: baseline vs synthetic variants, seen and unseen, from the DVC metrics."""

from __future__ import annotations

from synth2 import paths
from synth2.errors import Synth2Error
from synth2.io import read_json
from synth2.params import load_params
from synth2.pipeline import VARIANT_NAMES
from synth2.profiles import load_hooks

SUBSETS = ("seen", "unseen", "overall")


def results_table(split: str = "test") -> str:
    """The variants' scores on `split` ("test": reporting; "val": what the champion was chosen on)."""
    metrics = read_json(paths.EVAL_METRICS)
    params = load_params()
    profile = load_hooks(params, "report")
    columns = profile.RESULT_COLUMNS
    header = f"| variant | {split} | " + " | ".join(name for _, name in columns) + " |"
    lines = [header, "|---|---|" + "---:|" * len(columns)]
    scores = metrics.get(split)
    if not isinstance(scores, dict):
        raise Synth2Error(f"{paths.EVAL_METRICS} has no '{split}' scores; re-run 'dvc repro evaluate'")
    for variant in VARIANT_NAMES:
        for subset in SUBSETS:
            values = scores.get(variant, {}).get(subset)
            if values:
                cells = " | ".join(f"{values[key]:.3f}" if key in values else "n/a" for key, _ in columns)
                lines.append(f"| {variant} | {subset} | {cells} |")
    v, b = params.train_vlm, params.balance
    run = (
        f"Run: seed {params.seed}; {profile.data_description(params)}; {b.target_size} balanced synthetic "
        f"captions; prior {params.prior.steps} steps, {params.prior.num_inference_steps} sampling steps; "
        f"VLM {v.steps} steps, batch {v.batch_size}, mix ratio {v.synthetic.mix_ratio}, "
        f"source tags {'on' if v.synthetic.source_tags else 'off'}, "
        f"LM {'frozen' if v.freeze_lm else 'fine-tuned'}."
    )
    champion = metrics.get("champion", {})
    if champion:
        run += (
            f" Champion (chosen on validation): {champion['variant']} by {champion['metric']} = "
            f"{champion['value']:.3f}, {champion['margin']:.3f} ahead of the runner-up."
        )
    return "\n".join([*lines, "", run])
