"""Synth²: synthetic captions and image embeddings for visual-language models."""

__version__ = "0.1.0"
