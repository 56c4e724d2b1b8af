"""Ensemble: a weighted average of the members' quantiles, weights fitted on validation data.

Averaging quantiles with non-negative weights that sum to one (Vincentization) keeps them
non-crossing. Weights are fitted per horizon by minimising the mean pinball loss on validation
predictions, never on test folds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from training.metrics import QUANTILE_COLUMNS, QUANTILES

KEYS = ["date", "ticker", "horizon"]
TAUS = np.asarray(QUANTILES)


def align(members: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Join the members' prediction frames on (date, ticker, horizon); columns q10_<family> ..."""
    joined: pd.DataFrame | None = None
    for family, frame in members.items():
        part = frame[[*KEYS, "y", *QUANTILE_COLUMNS]].rename(
            columns={c: f"{c}_{family}" for c in QUANTILE_COLUMNS}
        )
        joined = part if joined is None else joined.merge(part.drop(columns="y"), on=KEYS)
    if joined is None or joined.empty:
        raise ValueError("members share no predictions to combine")
    return joined


def combine(aligned: pd.DataFrame, weights: dict[int, dict[str, float]]) -> pd.DataFrame:
    """Weighted quantiles per horizon -> a prediction frame like any member's."""
    missing = set(aligned["horizon"].unique()) - set(weights)
    if missing:
        raise ValueError(f"no ensemble weights for horizon(s) {sorted(missing)}")
    out = aligned[[*KEYS, "y"]].copy()
    for column in QUANTILE_COLUMNS:
        out[column] = 0.0
    for horizon, by_family in weights.items():
        rows = aligned["horizon"] == horizon
        for family, weight in by_family.items():
            for column in QUANTILE_COLUMNS:
                out.loc[rows, column] += weight * aligned.loc[rows, f"{column}_{family}"]
    return out


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def _pinball(y: np.ndarray, q: np.ndarray) -> float:
    """Mean pinball loss of q [n, 3] (levels 0.1/0.5/0.9) against y [n]."""
    diff = y[:, None] - q
    return float(np.maximum(TAUS * diff, (TAUS - 1) * diff).mean())


def fit_weights(aligned: pd.DataFrame, families: list[str]) -> dict[int, dict[str, float]]:
    """Simplex weights per horizon minimising validation pinball loss (softmax parametrised)."""
    weights: dict[int, dict[str, float]] = {}
    for horizon, part in aligned.groupby("horizon"):
        y = part["y"].to_numpy(float)
        # [rows, members, 3]: each member's quantiles side by side
        q = np.stack(
            [part[[f"{c}_{f}" for c in QUANTILE_COLUMNS]].to_numpy(float) for f in families], axis=1
        )

        def loss(params: np.ndarray, y: np.ndarray = y, q: np.ndarray = q) -> float:
            return _pinball(y, np.einsum("m,nmk->nk", _softmax(params), q))

        result = minimize(
            loss,
            np.zeros(len(families)),
            method="Nelder-Mead",
            options={"xatol": 1e-4, "fatol": 1e-10, "maxiter": 600},
        )
        w = _softmax(result.x)
        weights[int(horizon)] = {f: float(x) for f, x in zip(families, w, strict=True)}
    return weights
