"""MLflow pyfunc wrappers, so `models:/stockcopilot-<family>@champion` loads and predicts anywhere.

Input to `predict`: canonical bars (`ticker, date, close`, ...), already cut at the as-of date.
Output: one row per (ticker, horizon) with log-return quantiles `q10, q50, q90`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from training.bundle import ClassicalBundle, EnsembleBundle, ForecastBundle, load_folder


class ForecasterModel(mlflow.pyfunc.PythonModel):
    """A single-family forecaster: a network (weights, feature config, scaler, vocabulary) or
    the classical family (per-ticker GARCH parameters)."""

    def load_context(self, context: Any) -> None:
        bundle = load_folder(Path(context.artifacts["bundle"]))
        if not isinstance(bundle, ForecastBundle | ClassicalBundle):
            raise TypeError(f"{context.artifacts['bundle']} holds no single-family forecaster")
        self.bundle = bundle

    def predict(
        self,
        context: Any,
        model_input: pd.DataFrame,
        params: dict | None = None,
    ) -> pd.DataFrame:
        return self.bundle.predict_bars(model_input)


class EnsembleModel(mlflow.pyfunc.PythonModel):
    """Weighted member quantiles; members are loaded by the exact model URIs it was fitted with."""

    def load_context(self, context: Any) -> None:
        self.bundle = EnsembleBundle.load(Path(context.artifacts["bundle"]))
        self.members = {
            family: mlflow.pyfunc.load_model(info["model_uri"]).unwrap_python_model().bundle
            for family, info in self.bundle.members.items()
        }

    def predict(
        self,
        context: Any,
        model_input: pd.DataFrame,
        params: dict | None = None,
    ) -> pd.DataFrame:
        member_predictions = {f: b.predict_bars(model_input) for f, b in self.members.items()}
        return self.bundle.combine(member_predictions)
