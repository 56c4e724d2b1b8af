"""Model inputs: trailing features, fixed-length windows and a scaler fitted on training data only.

Training and serving both call `build_features` + `make_windows` with the `FeatureConfig` and the
`FeatureScaler` saved beside the model, so there is no train/serve skew. Every feature at date t
uses bars up to t only; targets (`forward_log_returns`) are the one place that looks ahead, and
they are never model inputs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Self

import numpy as np
import pandas as pd
import talib

from contracts import MARKET_TICKER

FEATURE_SET_VERSION = 2
# Close-only features, so every series in the universe (including close-only ones) qualifies.
OWN_FEATURES: tuple[str, ...] = (
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
    # Corsi's HAR components: mean absolute return over a day, a week, a month and a quarter
    "abs_ret_1",
    "abs_ret_5",
    "abs_ret_22",
    "abs_ret_66",
)
# Market context (needs the market's closes on the same dates): the S&P 500's own return and
# volatility, the stock's volatility relative to it, and its rolling beta.
MARKET_FEATURES: tuple[str, ...] = ("mkt_ret_1", "mkt_vol_22", "rel_vol_22", "beta_60")
DEFAULT_FEATURES: tuple[str, ...] = (*OWN_FEATURES, *MARKET_FEATURES)


class _SeriesOps:
    """The feature arithmetic on one ticker's pandas series (training, and the reference)."""

    @staticmethod
    def log(x: pd.Series) -> pd.Series:
        return np.log(x.astype(np.float64))

    @staticmethod
    def diff(x: pd.Series, k: int) -> pd.Series:
        return x.diff(k)

    @staticmethod
    def mean(x: pd.Series, k: int) -> pd.Series:
        return x.rolling(k).mean()

    @staticmethod
    def std(x: pd.Series, k: int, ddof: int = 1) -> pd.Series:
        return x.rolling(k).std(ddof=ddof)

    @staticmethod
    def running_max(x: pd.Series, k: int) -> pd.Series:
        return x.rolling(k, min_periods=1).max()

    @staticmethod
    def talib(x: pd.Series, indicator: Callable[[np.ndarray], np.ndarray]) -> pd.Series:
        return pd.Series(indicator(x.to_numpy(np.float64)), index=x.index)

    @staticmethod
    def zero_to_nan(x: pd.Series) -> pd.Series:
        return x.replace(0.0, np.nan)


class _TailOps:
    """The same arithmetic on a [bars, tickers] array, every ticker at once, evaluating rolling
    statistics only for the newest `rows` bars (all a forecast needs); earlier rows are NaN."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    @staticmethod
    def log(x: np.ndarray) -> np.ndarray:
        return np.log(x)

    @staticmethod
    def diff(x: np.ndarray, k: int) -> np.ndarray:
        out = np.full_like(x, np.nan)
        out[k:] = x[k:] - x[:-k]
        return out

    def _windows(self, x: np.ndarray, k: int) -> tuple[int, np.ndarray]:
        """(first row computed, [rows, tickers, k] trailing windows ending at each row)."""
        start = max(len(x) - self.rows, 0)
        lo = start - (k - 1)
        src = x[max(lo, 0) :]
        if lo < 0:
            src = np.vstack([np.full((-lo, x.shape[1]), np.nan), src])
        return start, np.lib.stride_tricks.sliding_window_view(src, k, axis=0)

    def _rolling(
        self, x: np.ndarray, k: int, reduce: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        out = np.full_like(x, np.nan)
        start, windows = self._windows(x, k)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
            out[start:] = reduce(windows)
        return out

    def mean(self, x: np.ndarray, k: int) -> np.ndarray:
        return self._rolling(x, k, lambda w: w.mean(axis=-1))

    def std(self, x: np.ndarray, k: int, ddof: int = 1) -> np.ndarray:
        return self._rolling(x, k, lambda w: w.std(axis=-1, ddof=ddof))

    def running_max(self, x: np.ndarray, k: int) -> np.ndarray:
        return self._rolling(x, k, lambda w: np.nanmax(w, axis=-1))

    @staticmethod
    def talib(x: np.ndarray, indicator: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        # recursive indicators (EMA-based) need each ticker's whole history, not just the tail
        return np.stack([indicator(np.ascontiguousarray(x[:, i])) for i in range(x.shape[1])], 1)

    @staticmethod
    def zero_to_nan(x: np.ndarray) -> np.ndarray:
        return np.where(x == 0.0, np.nan, x)


def _macd_hist(values: np.ndarray) -> np.ndarray:
    return talib.MACD(values, 12, 26, 9)[2]


def _rsi_14(values: np.ndarray) -> np.ndarray:
    return talib.RSI(values, 14)


def _feature_columns(close: Any, ops: Any = _SeriesOps, market: Any = None) -> dict[str, Any]:
    """Every feature, defined once: on one ticker's pandas series (`_SeriesOps`), or on a
    [bars, tickers] array with NaN before each ticker's first bar (`_TailOps`). `market`: the
    market's closes on the same rows (the market features are left out without it)."""
    log_close = ops.log(close)
    ret = ops.diff(log_close, 1)
    sma20 = ops.mean(close, 20)
    std20 = ops.std(close, 20, ddof=0)
    absolute = abs(ret)
    columns = {
        "log_ret_1": ret,
        "log_ret_5": ops.diff(log_close, 5),
        "log_ret_20": ops.diff(log_close, 20),
        "vol_5": ops.std(ret, 5),
        "vol_20": ops.std(ret, 20),
        "vol_60": ops.std(ret, 60),
        "rsi_14": ops.talib(close, _rsi_14) / 100.0,
        "macd_hist": ops.talib(close, _macd_hist) / close,
        "dist_sma_20": close / sma20 - 1.0,
        "dist_sma_50": close / ops.mean(close, 50) - 1.0,
        "dist_sma_200": close / ops.mean(close, 200) - 1.0,
        "bb_pct_b": (close - (sma20 - 2 * std20)) / ops.zero_to_nan(4 * std20),
        "drawdown_252": close / ops.running_max(close, 252) - 1.0,
        "abs_ret_1": absolute,
        "abs_ret_5": ops.mean(absolute, 5),
        "abs_ret_22": ops.mean(absolute, 22),
        "abs_ret_66": ops.mean(absolute, 66),
    }
    if market is None:
        return columns
    mret = ops.diff(ops.log(market), 1)
    mvol = ops.std(mret, 22)
    m_mean = ops.mean(mret, 60)
    m_var = ops.mean(mret * mret, 60) - m_mean * m_mean
    covariance = ops.mean(ret * mret, 60) - ops.mean(ret, 60) * m_mean
    return columns | {
        "mkt_ret_1": mret,
        "mkt_vol_22": mvol,
        "rel_vol_22": ops.std(ret, 22) / ops.zero_to_nan(mvol),
        "beta_60": covariance / ops.zero_to_nan(m_var),
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

    @property
    def needs_market(self) -> bool:
        return any(name in MARKET_FEATURES for name in self.features)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(self.features)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        return cls(tuple(raw["features"]), int(raw["window"]), int(raw["version"]))


def market_on(dates: pd.DatetimeIndex, market: pd.Series) -> pd.Series:
    """The market's closes on a ticker's own dates (the last known close on a day the market
    series lacks; NaN before it starts)."""
    return market.reindex(market.index.union(dates)).ffill().reindex(dates)


def build_features(
    close: pd.Series, config: FeatureConfig, market: pd.Series | None = None
) -> pd.DataFrame:
    """Date-indexed feature frame from one ticker's closes (and the market's, for the market
    features); row t uses closes up to t only."""
    if close.isna().any() or (close <= 0).any():
        raise ValueError("closes must be positive and complete to build features")
    if config.needs_market and market is None:
        raise ValueError(f"the market features need {MARKET_TICKER}'s closes")
    aligned = None if market is None else market_on(close.index, market)
    columns = _feature_columns(close, market=aligned)
    return pd.DataFrame({name: columns[name] for name in config.features}, index=close.index)


def latest_windows(
    closes: dict[str, pd.Series],
    config: FeatureConfig,
    scaler: FeatureScaler,
    market: pd.Series | None = None,
) -> dict[str, np.ndarray]:
    """The newest scaled window of each ticker, all tickers at once.

    Each ticker's closes (ascending, complete) become one column of a [bars, tickers] array
    aligned on the newest bar, NaN before its first bar, and every feature is computed for the
    whole batch in one numpy expression, rolling statistics only over the newest `window` rows.
    The feature definitions are the ones training uses (`_feature_columns`), and a test checks
    each ticker's window against its own series built the training way. Tickers whose newest
    window is incomplete (too little history) are left out. `market`: the market's closes,
    aligned to each ticker's dates the way training aligns them (`market_on`).
    """
    usable = {t: c for t, c in closes.items() if len(c) >= config.window + 1}
    if not usable:
        return {}
    for ticker, close in usable.items():
        if close.isna().any() or (close <= 0).any():
            raise ValueError(f"{ticker}: closes must be positive and complete to build features")
    if config.needs_market and market is None:
        raise ValueError(f"the market features need {MARKET_TICKER}'s closes")
    length = max(len(c) for c in usable.values())
    tickers = list(usable)
    wide = np.full((length, len(tickers)), np.nan)
    wide_market = None if market is None else np.full_like(wide, np.nan)
    for i, ticker in enumerate(tickers):
        values = usable[ticker].to_numpy(np.float64)
        wide[length - len(values) :, i] = values
        if wide_market is not None and market is not None:
            on = market_on(usable[ticker].index, market)
            wide_market[length - len(values) :, i] = on.to_numpy(np.float64)
    if list(config.features) != scaler.features:
        raise ValueError(f"scaler was fitted on {scaler.features}, got {list(config.features)}")
    columns = _feature_columns(wide, _TailOps(config.window), wide_market)
    mean = np.asarray(scaler.mean)
    std = np.asarray(scaler.std)
    tail = np.stack([columns[name][-config.window :] for name in config.features], axis=-1)
    tail = ((tail - mean) / std).astype(np.float32)  # [window, tickers, features]
    return {
        ticker: np.ascontiguousarray(tail[:, i, :])
        for i, ticker in enumerate(tickers)
        if not np.isnan(tail[:, i, :]).any()
    }


def forward_log_returns(close: pd.Series, horizons: tuple[int, ...]) -> pd.DataFrame:
    """Targets: log(close[t+h] / close[t]) for each horizon; NaN where t+h is beyond the data."""
    log_close = _SeriesOps.log(close)
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
