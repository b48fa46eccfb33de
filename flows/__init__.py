"""Prefect flows over the DVC pipeline: `synth2_pipeline` and `synth2_experiment`."""
