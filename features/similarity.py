"""Return-shape embeddings for similarity search: a ticker's last `window` daily log returns,
z-normalised, so two windows are near when their paths have the same shape whatever the
stock's price level or volatility. Row t uses closes up to t only; the forward returns stored
beside each window (5 and 20 bars on) are what happened next."""

from __future__ import annotations

import numpy as np
import pandas as pd

WINDOWS = (20, 30, 60)
HORIZONS = (5, 20)


def _normalise(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z-normalised rows, which rows were usable: finite and not flat)."""
    mean = windows.mean(axis=-1, keepdims=True)
    std = windows.std(axis=-1, keepdims=True)
    usable = (std[..., 0] > 1e-12) & np.isfinite(windows).all(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (windows - mean) / np.where(std > 1e-12, std, 1.0)
    return z.astype(np.float32), usable


def embed_all(close: pd.Series, window: int) -> pd.DataFrame:
    """Every complete window of one ticker: index = window end date; columns `embedding`
    (float32 array), `fwd_5`, `fwd_20` (NaN where the future is not known yet)."""
    values = np.log(close.to_numpy(np.float64))
    returns = np.diff(values)
    if len(returns) < window:
        return pd.DataFrame(columns=["embedding", *(f"fwd_{h}" for h in HORIZONS)])
    windows = np.lib.stride_tricks.sliding_window_view(returns, window)
    z, usable = _normalise(windows)
    ends = np.arange(window, len(values))  # close index at which each window ends
    frame = pd.DataFrame({"embedding": list(z)}, index=close.index[ends])
    for h in HORIZONS:
        forward = np.full(len(ends), np.nan)
        known = ends + h < len(values)
        forward[known] = values[ends[known] + h] - values[ends[known]]
        frame[f"fwd_{h}"] = forward
    return frame[usable]


def embed_latest(close: pd.Series, window: int) -> np.ndarray | None:
    """The embedding of the window ending at the last close (None if too short or flat)."""
    if len(close) < window + 1:
        return None
    returns = np.diff(np.log(close.to_numpy(np.float64)[-(window + 1) :]))
    z, usable = _normalise(returns[None, :])
    return z[0] if usable[0] else None


def to_pgvector(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{v:.6g}" for v in vector) + "]"
