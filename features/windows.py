"""Model inputs: trailing features, fixed-length windows and a scaler fitted on training data only.

Training and serving both call `build_features` + `make_windows` with the `FeatureConfig` and the
`FeatureScaler` saved beside the model, so there is no train/serve skew. Every feature at date t
uses bars up to t only; targets (`forward_log_returns`) are the one place that looks ahead, and
they are never model inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Self

import numpy as np
import pandas as pd
import talib

FEATURE_SET_VERSION = 1
# Close-only features, so every series in the universe (including close-only ones) qualifies.
DEFAULT_FEATURES: tuple[str, ...] = (
    "log_ret_1",
    "log_ret_5",
    "log_ret_20",
    "vol_5",
    "vol_20",
    "vol_60",
    "rsi_14",
    "macd_hist",
    "dist_sma_20",
    "dist_sma_50",
    "dist_sma_200",
    "bb_pct_b",
    "drawdown_252",
)


def _log_close(close: pd.Series) -> pd.Series:
    return np.log(close.astype(np.float64))


def _feature_columns(close: pd.Series) -> dict[str, pd.Series]:
    log_close = _log_close(close)
    ret = log_close.diff()
    values = close.to_numpy(np.float64)
    _, _, macd_hist = talib.MACD(values, 12, 26, 9)
    sma20 = close.rolling(20).mean()
    std20 = close.rolling(20).std(ddof=0)
    return {
        "log_ret_1": ret,
        "log_ret_5": log_close.diff(5),
        "log_ret_20": log_close.diff(20),
        "vol_5": ret.rolling(5).std(),
        "vol_20": ret.rolling(20).std(),
        "vol_60": ret.rolling(60).std(),
        "rsi_14": pd.Series(talib.RSI(values, 14), index=close.index) / 100.0,
        "macd_hist": pd.Series(macd_hist, index=close.index) / close,
        "dist_sma_20": close / sma20 - 1.0,
        "dist_sma_50": close / close.rolling(50).mean() - 1.0,
        "dist_sma_200": close / close.rolling(200).mean() - 1.0,
        "bb_pct_b": (close - (sma20 - 2 * std20)) / (4 * std20).replace(0.0, np.nan),
        "drawdown_252": close / close.rolling(252, min_periods=1).max() - 1.0,
    }


@dataclass(frozen=True)
class FeatureConfig:
    """What the model sees: which features, over how many bars. Saved with every model."""

    features: tuple[str, ...] = DEFAULT_FEATURES
    window: int = 60
    version: int = FEATURE_SET_VERSION

    def __post_init__(self) -> None:
        unknown = set(self.features) - set(DEFAULT_FEATURES)
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}; known: {DEFAULT_FEATURES}")
        if not 1 <= self.window <= 1000:
            raise ValueError("window must be 1..1000 bars")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(self.features)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        return cls(tuple(raw["features"]), int(raw["window"]), int(raw["version"]))


def build_features(close: pd.Series, config: FeatureConfig) -> pd.DataFrame:
    """Date-indexed feature frame from one ticker's closes; row t uses closes up to t only."""
    if close.isna().any() or (close <= 0).any():
        raise ValueError("closes must be positive and complete to build features")
    columns = _feature_columns(close)
    return pd.DataFrame({name: columns[name] for name in config.features}, index=close.index)


def forward_log_returns(close: pd.Series, horizons: tuple[int, ...]) -> pd.DataFrame:
    """Targets: log(close[t+h] / close[t]) for each horizon; NaN where t+h is beyond the data."""
    log_close = _log_close(close)
    return pd.DataFrame({f"h{h}": log_close.shift(-h) - log_close for h in horizons})


def make_windows(features: pd.DataFrame, window: int) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Stack every complete window: X[i] holds rows (t-window+1 .. t) for the i-th valid end t.

    Returns (X with shape [n, window, n_features] as float32, the end date of each window).
    Windows touching a NaN (indicator warm-up) are skipped.
    """
    values = features.to_numpy(np.float32)
    if len(values) < window:
        return np.empty((0, window, values.shape[1]), np.float32), pd.DatetimeIndex([])
    stacked = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)
    stacked = np.moveaxis(stacked, -1, 1)  # [n, window, features]
    complete = ~np.isnan(stacked).any(axis=(1, 2))
    ends = pd.DatetimeIndex(features.index[window - 1 :])[complete]
    return np.ascontiguousarray(stacked[complete]), ends


@dataclass
class FeatureScaler:
    """Per-feature standardisation, fitted on training rows only and saved with the model."""

    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    features: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, train_features: pd.DataFrame) -> Self:
        clean = train_features.dropna()
        if clean.empty:
            raise ValueError("cannot fit a scaler on no complete training rows")
        std = clean.std(ddof=0).replace(0.0, 1.0)
        return cls(clean.mean().tolist(), std.tolist(), list(train_features.columns))

    def transform(self, features: pd.DataFrame) -> pd.DataFrame:
        if list(features.columns) != self.features:
            raise ValueError(f"scaler was fitted on {self.features}, got {list(features.columns)}")
        return (features - np.asarray(self.mean)) / np.asarray(self.std)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        return cls(list(raw["mean"]), list(raw["std"]), list(raw["features"]))
