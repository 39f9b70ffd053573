"""The served model: loads model.joblib once, then predicts iris classes.

fairing's model server calls load(model_dir) once before it reports ready, then predict(instances)
for each request; `instances` is the list of rows from {"instances": [...]} (V1) or the rows of the
single input tensor (Open Inference Protocol v2)."""
from __future__ import annotations

from pathlib import Path

CLASSES = ("setosa", "versicolor", "virginica")


class IrisModel:
    def load(self, model_dir: str) -> None:
        import joblib

        self.clf = joblib.load(Path(model_dir) / "model.joblib")

    def predict(self, instances):
        import numpy as np

        X = np.asarray(instances, dtype=float)
        if X.ndim != 2:
            raise ValueError(f"expected rows of 4 measurements, got an array of shape {list(X.shape)}")
        return self.clf.predict(X).tolist()
