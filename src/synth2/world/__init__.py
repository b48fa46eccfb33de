"""The shapes world: procedural scenes with known ground truth, a caption grammar and its parser.

Contract used by every other module (see scenes.py, grammar.py, parser.py):

* `scenes.COLOURS`, `SHAPES`, `SIZES`, `POSITIONS`, `RELATIONS`: the attribute vocabularies.
* `scenes.Scene`: frozen dataclass (colour, shape, size, position, colour2, shape2, relation); the
  second object's fields are None for one-object scenes. `Scene.combo` is "colour shape".
* `scenes.render(scene, image_size) -> np.ndarray` uint8 [H, W, 3].
* `grammar.caption(scene, style, rng) -> str` with style "human" or "corpus".
* `parser.parse(text) -> ParsedCaption` (same fields as Scene, None where not found);
  `ParsedCaption.is_valid` is True when at least colour and shape were read.
* Scene tables (Parquet) have columns image_id (row in pixels.safetensors), colour, shape, size,
  position, colour2, shape2, relation, combo; `test` adds `seen` and `references` (list of str);
  `real_train` adds `caption`; `text_corpus` has caption plus the attributes, no image_id.
"""
