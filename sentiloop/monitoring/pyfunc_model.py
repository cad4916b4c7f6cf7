"""MLflow "models from code" definition of the sentiloop ensemble (no pickled Python objects).

MLflow copies this file into the logged model and runs it at load time; ``set_model`` names the
model. ``predict`` takes a DataFrame with a ``text`` column and returns the label and one
probability column per class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class SentiloopEnsembleModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from sentiloop.models.ensemble import Ensemble

        self.ensemble = Ensemble.load(Path(context.artifacts["ensemble"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if "text" not in model_input.columns:
            raise ValueError(f"the input needs a 'text' column, it has {list(model_input.columns)}")
        probabilities = self.ensemble.predict_proba([str(t) for t in model_input["text"]])
        names = self.ensemble.label_names
        frame = pd.DataFrame(probabilities, columns=[f"p_{n}" for n in names])
        frame.insert(0, "label", [names[i] for i in probabilities.argmax(axis=1)])
        return frame


set_model(SentiloopEnsembleModel())
