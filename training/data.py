"""From canonical bars to model-ready windows: per-ticker features, targets, vocabularies, folds.

The scaler is fitted on training rows only (`fit_scaler(panel, until=...)`); windows are built by
`features.windows.make_windows`, the same function serving uses.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from features.bars import ticker_frame
from features.datasets import load_bundled_bars, load_universe
from features.windows import (
    MARKET_TICKER,
    FeatureConfig,
    FeatureScaler,
    build_features,
    forward_log_returns,
    make_windows,
)
from training.config import TrainConfig

HORIZONS: tuple[int, ...] = (1, 5, 20)
BARS_FILE = Path("data/bars.parquet")  # DVC `ingest` output
FEATURES_FILE = Path("data/features.parquet")  # DVC `featurize` output
SIGMA_LOOKBACK = 60
SIGMA_FLOOR = 1e-4
UNKNOWN = 0  # embedding index shared by every ticker/sector not seen in training


@dataclass(frozen=True)
class Vocab:
    """Ticker and sector ids for the embeddings; id 0 means "unknown"."""

    tickers: dict[str, int]
    sectors: dict[str, int]
    ticker_sector: dict[str, str | None]

    @classmethod
    def build(cls, ticker_sector: dict[str, str | None]) -> Self:
        tickers = {t: i + 1 for i, t in enumerate(sorted(ticker_sector))}
        names = sorted({s for s in ticker_sector.values() if s})
        return cls(tickers, {s: i + 1 for i, s in enumerate(names)}, dict(ticker_sector))

    def ticker_id(self, ticker: str) -> int:
        return self.tickers.get(ticker, UNKNOWN)

    def sector_id(self, sector: str | None) -> int:
        return self.sectors.get(sector or "", UNKNOWN)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tickers": self.tickers,
            "sectors": self.sectors,
            "ticker_sector": self.ticker_sector,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        return cls(dict(raw["tickers"]), dict(raw["sectors"]), dict(raw["ticker_sector"]))


DRIFT_LOOKBACK = 252


def trailing_sigma(close: pd.Series) -> pd.Series:
    """Trailing daily log-return volatility: the scale every forecaster predicts in units of."""
    sigma = np.log(close).diff().rolling(SIGMA_LOOKBACK, min_periods=20).std()
    return sigma.clip(lower=SIGMA_FLOOR)


def latest_sigma(closes: dict[str, pd.Series]) -> dict[str, float]:
    """`trailing_sigma` at each ticker's newest bar, every ticker in one numpy pass (serving
    a batch); NaN where fewer than 20 returns are available."""
    if not closes:
        return {}
    rets = np.full((SIGMA_LOOKBACK, len(closes)), np.nan)
    for i, close in enumerate(closes.values()):
        tail = np.diff(np.log(close.to_numpy(np.float64)[-(SIGMA_LOOKBACK + 1) :]))
        if len(tail):
            rets[-len(tail) :, i] = tail
    count = np.sum(~np.isnan(rets), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # too-short columns come out NaN
        sigma = np.nanstd(rets, axis=0, ddof=1)
    sigma = np.where(count >= 20, np.maximum(sigma, SIGMA_FLOOR), np.nan)
    return dict(zip(closes, sigma.tolist(), strict=True))


def trailing_drift(close: pd.Series) -> pd.Series:
    """Trailing mean daily log return (the historical-drift baseline's forecast)."""
    return np.log(close).diff().rolling(DRIFT_LOOKBACK, min_periods=60).mean()


@dataclass
class TickerSeries:
    features: pd.DataFrame
    targets: pd.DataFrame
    sigma: pd.Series
    drift: pd.Series


@dataclass
class Panel:
    """Unscaled features, targets and volatility per ticker."""

    config: FeatureConfig
    horizons: tuple[int, ...]
    series: dict[str, TickerSeries] = field(default_factory=dict)

    @property
    def dates(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(
            sorted(set().union(*(s.features.index for s in self.series.values())))
        )


def market_close(bars: pd.DataFrame) -> pd.Series | None:
    """The market's (S&P 500's) closes in `bars`, or None when they hold none."""
    if not (bars["ticker"] == MARKET_TICKER).any():
        return None
    return ticker_frame(bars, MARKET_TICKER)["close"].dropna()


def build_panel(
    bars: pd.DataFrame,
    config: FeatureConfig,
    horizons: tuple[int, ...] = HORIZONS,
    min_bars: int | None = None,
    market: pd.Series | None = None,
) -> Panel:
    """Features and forward targets for every ticker with enough history; the market features
    against `market` (default: the market's own rows in `bars`)."""
    needed = min_bars or config.window + 250
    panel = Panel(config, horizons)
    market = market if market is not None else market_close(bars)
    for ticker in sorted(bars["ticker"].unique()):
        close = ticker_frame(bars, ticker)["close"]
        if len(close) < needed:
            continue
        panel.series[ticker] = TickerSeries(
            build_features(close, config, market),
            forward_log_returns(close, horizons),
            trailing_sigma(close),
            trailing_drift(close),
        )
    return panel


def fit_scaler(panel: Panel, until: pd.Timestamp) -> FeatureScaler:
    """Fit on feature rows dated up to `until` only (never on validation or test rows)."""
    rows = [s.features.loc[:until] for s in panel.series.values()]
    return FeatureScaler.fit(pd.concat(rows))


@dataclass
class WindowSet:
    """Arrays for one split: inputs, ids, volatility scales, targets and where each came from.

    `sigma` is the trailing 60-day volatility (the random walk's); `scale` is what a network
    predicts in units of, per horizon: by default sigma × √h, in training the classical
    family's own h-day volatility forecast (see `Scale`).
    """

    x: np.ndarray  # [n, window, features] float32
    ticker: np.ndarray  # [n] int64
    sector: np.ndarray  # [n] int64
    sigma: np.ndarray  # [n] float32
    y: np.ndarray  # [n, horizons] float32, NaN where the horizon runs past the data
    dates: np.ndarray  # [n] datetime64
    tickers: np.ndarray  # [n] object
    scale: np.ndarray  # [n, horizons] float32

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, mask: np.ndarray) -> WindowSet:
        return WindowSet(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))

    def labelled(self) -> WindowSet:
        """Only windows whose every horizon has a realised outcome (for fitting and scoring)."""
        return self.subset(np.isfinite(self.y).all(axis=1))


# (ticker, window end dates) -> [dates, horizons] h-day volatility, NaN where unknown
Scale = Callable[[str, pd.DatetimeIndex], np.ndarray]


def static_scale(sigma: np.ndarray, horizons: tuple[int, ...]) -> np.ndarray:
    """The random walk's h-day scale: σ × √h."""
    return (sigma[:, None] * np.sqrt(np.asarray(horizons, np.float32))[None, :]).astype(np.float32)


def window_set(
    panel: Panel,
    scaler: FeatureScaler,
    vocab: Vocab,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    stride: int = 1,
    tickers: list[str] | None = None,
    scale: Scale | None = None,
) -> WindowSet:
    """Windows whose end date lies in [start, end], every `stride`-th per ticker; `scale` gives
    the networks' per-horizon volatility scale (default: the trailing σ × √h). Windows without
    a scale are left out."""
    parts: list[dict[str, np.ndarray]] = []
    for ticker in tickers or list(panel.series):
        series = panel.series[ticker]
        x, ends = make_windows(scaler.transform(series.features), panel.config.window)
        keep = np.ones(len(ends), bool)
        if start is not None:
            keep &= ends >= start
        if end is not None:
            keep &= ends <= end
        idx = np.flatnonzero(keep)[::-1][::stride][::-1]  # stride back from the newest window
        if len(idx) == 0:
            continue
        chosen = ends[idx]
        sigma = series.sigma.reindex(chosen).to_numpy(np.float32)
        if scale is None:
            scales = static_scale(sigma, panel.horizons)
        else:
            scales = np.asarray(scale(ticker, chosen), np.float32)
        ok = np.isfinite(sigma) & np.isfinite(scales).all(axis=1) & (scales > 0).all(axis=1)
        parts.append(
            {
                "x": x[idx][ok],
                "ticker": np.full(ok.sum(), vocab.ticker_id(ticker), np.int64),
                "sector": np.full(
                    ok.sum(), vocab.sector_id(vocab.ticker_sector.get(ticker)), np.int64
                ),
                "sigma": sigma[ok],
                "y": series.targets.reindex(chosen).to_numpy(np.float32)[ok],
                "dates": chosen.to_numpy()[ok],
                "tickers": np.full(ok.sum(), ticker, object),
                "scale": scales[ok],
            }
        )
    if not parts:
        f = len(panel.config.features)
        empty = WindowSet(
            np.empty((0, panel.config.window, f), np.float32),
            *(np.empty(0, t) for t in (np.int64, np.int64, np.float32)),
            np.empty((0, len(panel.horizons)), np.float32),
            np.empty(0, "datetime64[ns]"),
            np.empty(0, object),
            np.empty((0, len(panel.horizons)), np.float32),
        )
        return empty
    return WindowSet(**{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


@dataclass(frozen=True)
class Fold:
    """One walk-forward split, in calendar dates. Gaps of `embargo` trading days separate parts."""

    index: int
    fit_end: pd.Timestamp
    val_start: pd.Timestamp
    val_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp


def walk_forward_folds(
    dates: pd.DatetimeIndex, n_folds: int, test_days: int, val_days: int, embargo: int
) -> list[Fold]:
    """Consecutive test blocks at the end of history, each trained only on what came before.

    The embargo (≥ the longest horizon) keeps any training target from overlapping the
    validation or test period.
    """
    n = len(dates)
    needed = n_folds * test_days + 2 * embargo + val_days + 250
    if n < needed:
        raise ValueError(f"need at least {needed} trading days for these folds, have {n}")
    folds = []
    for k in range(n_folds):
        test_start = n - (n_folds - k) * test_days
        val_end = test_start - embargo - 1
        val_start = val_end - val_days + 1
        fit_end = val_start - embargo - 1
        folds.append(
            Fold(
                k,
                dates[fit_end],
                dates[val_start],
                dates[val_end],
                dates[test_start],
                dates[test_start + test_days - 1],
            )
        )
    return folds


def final_fold(dates: pd.DatetimeIndex, val_days: int, embargo: int) -> Fold:
    """The production fit: everything labelled, the newest labelled days kept for validation."""
    last_labelled = len(dates) - 1 - embargo
    val_start = last_labelled - val_days + 1
    fit_end = val_start - embargo - 1
    end = dates[-1]
    return Fold(-1, dates[fit_end], dates[val_start], dates[last_labelled], end, end)


def panel_to_frame(panel: Panel) -> pd.DataFrame:
    """Long frame (ticker, date, features..., h1.., sigma, drift) for the DVC `featurize` stage."""
    parts = []
    for ticker, s in panel.series.items():
        part = pd.concat(
            [s.features, s.targets, s.sigma.rename("sigma"), s.drift.rename("drift")], axis=1
        )
        parts.append(part.rename_axis("date").reset_index().assign(ticker=ticker))
    return pd.concat(parts, ignore_index=True)


def panel_from_frame(
    frame: pd.DataFrame,
    config: FeatureConfig,
    horizons: tuple[int, ...],
) -> Panel:
    panel = Panel(config, horizons)
    targets = [f"h{h}" for h in horizons]
    for ticker, part in frame.groupby("ticker", sort=True):
        indexed = part.set_index(pd.DatetimeIndex(part["date"], name="date")).sort_index()
        panel.series[str(ticker)] = TickerSeries(
            indexed[list(config.features)], indexed[targets], indexed["sigma"], indexed["drift"]
        )
    return panel


def read_bars(path: Path = BARS_FILE) -> pd.DataFrame:
    """The DVC snapshot if present, else the bundled data straight from the packages."""
    return pd.read_parquet(path) if path.exists() else load_bundled_bars()


def load_panel(cfg: TrainConfig, features: Path = FEATURES_FILE) -> Panel:
    """The featurize output (or features computed now), cut to the profile's tickers and dates."""
    frame = pd.read_parquet(features) if features.exists() else None
    if frame is None or not set(FeatureConfig().features) <= set(frame.columns):
        # no featurize output yet, or one from an older feature set: compute the features now
        frame = panel_to_frame(build_panel(read_bars(), FeatureConfig()))
    if cfg.tickers:
        frame = frame[frame["ticker"].isin(cfg.tickers)]
    if cfg.start:
        frame = frame[frame["date"] >= pd.Timestamp(cfg.start)]
    return panel_from_frame(frame, FeatureConfig(window=cfg.window), cfg.horizons)


def vocab_for(panel: Panel) -> Vocab:
    """Vocabulary of the panel's tickers with their GICS sectors from the universe file."""
    sectors = {i.ticker: i.sector for i in load_universe().instruments}
    return Vocab.build({t: sectors.get(t) for t in panel.series})
