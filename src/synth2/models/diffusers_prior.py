"""diffusers' `PriorTransformer`, imported without every other transformer model diffusers ships.

`from diffusers import PriorTransformer` runs the package `diffusers.models.transformers`, whose
`__init__` imports all of its ~70 models (Flux, CogVideoX, Sana, ...) and through them much of
transformers: 8.4 s against 3.6 s for the one module used here (2-core machine, diffusers 0.42), paid at
every start of `prior` and `synthesize`. The module is imported with its package's `__init__` skipped:
a bare package object (the real directory on its `__path__`) stands in while it loads and is removed
right after, so a later import of the package (the coco profile's pretrained pipelines) runs the real
`__init__`, which finds this module loaded already and binds the same class. The model code is
diffusers' own, unchanged.
"""

from __future__ import annotations

import importlib
import sys
import types

PACKAGE = "diffusers.models.transformers"
MODULE = f"{PACKAGE}.prior_transformer"


def _import_prior_module() -> types.ModuleType:
    if MODULE in sys.modules or PACKAGE in sys.modules:  # loaded already: nothing to save
        return importlib.import_module(MODULE)
    import diffusers.models  # a lazy module: cheap, and it does not import the transformers package

    bare = types.ModuleType(PACKAGE)
    bare.__path__ = [f"{path}/transformers" for path in diffusers.models.__path__]
    bare.__package__ = PACKAGE
    sys.modules[PACKAGE] = bare
    try:
        return importlib.import_module(MODULE)
    finally:
        del sys.modules[PACKAGE]  # the next `import diffusers.models.transformers` runs the real one


PriorTransformer = _import_prior_module().PriorTransformer
