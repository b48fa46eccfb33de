"""The pyfunc "model from code" that synth2.tracking.log_model logs: a saved model directory.

MLflow copies this file next to the model's artifacts and runs it on load, so nothing is pickled.
`load()` hands the directory to the loader named in the model config ("module:callable"), e.g.
`transformers:AutoModel.from_pretrained`; without one it returns the directory path.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

# predict() takes whatever the loaded model takes; MLflow's nudge towards typed inputs does not apply.
warnings.filterwarnings("ignore", message="Add type hints to the `predict` method")


class SavedModelDirectory(PythonModel):
    def load_context(self, context: Any) -> None:
        self.path = Path(context.artifacts["model_dir"])
        self.loader = (context.model_config or {}).get("loader")
        self._model: Any = None

    def load(self) -> Any:
        if self._model is None:
            if not self.loader:
                return self.path
            module, _, attr = self.loader.partition(":")
            target: Any = importlib.import_module(module)
            for part in attr.split("."):
                target = getattr(target, part)
            self._model = target(self.path)
        return self._model

    # No type hints on predict: MLflow would try (and fail) to derive a signature from them.
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        model = self.load()
        if not hasattr(model, "predict"):
            raise TypeError(
                f"{self.path} was logged without a loader whose model has predict(); "
                "use unwrap_python_model().load() and call the model directly"
            )
        return model.predict(model_input)


mlflow.models.set_model(SavedModelDirectory())
