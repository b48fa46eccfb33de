"""DVC stages, one module each, run as `python -m synth2.stages.NAME` (see dvc.yaml)."""
