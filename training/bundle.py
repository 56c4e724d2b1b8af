"""Everything a trained forecaster needs to predict, saved as one folder (and one MLflow model).

A bundle holds the network weights *and* the feature config, fitted scaler and vocabulary from
training, so serving builds inputs with exactly the code and parameters training used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import torch

from features.bars import ticker_frame
from features.windows import FeatureConfig, FeatureScaler, build_features, make_windows
from training.baselines import to_frame
from training.data import Vocab, WindowSet, trailing_sigma
from training.ensemble import align, combine
from training.fit import predict
from training.models import FAMILIES, QuantileForecaster

WEIGHTS_FILE = "weights.pt"
BUNDLE_FILE = "bundle.json"


def _write_meta(directory: Path, meta: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return directory


def _read_meta(directory: Path) -> dict[str, Any]:
    return json.loads((directory / BUNDLE_FILE).read_text())


def _last_window(
    close: pd.Series,
    config: FeatureConfig,
    scaler: FeatureScaler,
) -> tuple[np.ndarray, float] | None:
    """The newest scaled window and trailing sigma for one ticker, or None if history is short."""
    if len(close) < config.window + 1:
        return None
    x, ends = make_windows(scaler.transform(build_features(close, config)), config.window)
    sigma = float(trailing_sigma(close).iloc[-1])
    if len(ends) == 0 or ends[-1] != close.index[-1] or not np.isfinite(sigma):
        return None
    return x[-1], sigma


@dataclass
class ForecastBundle:
    family: str
    hparams: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    feature_config: FeatureConfig
    scaler: FeatureScaler
    vocab: Vocab
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def horizons(self) -> tuple[int, ...]:
        return tuple(self.hparams["horizons"])

    @cached_property
    def module(self) -> QuantileForecaster:
        module = FAMILIES[self.family](**self.hparams)
        module.load_state_dict(self.state_dict)
        return module.eval()

    @classmethod
    def from_module(
        cls,
        module: QuantileForecaster,
        config: FeatureConfig,
        scaler: FeatureScaler,
        vocab: Vocab,
        card: dict[str, Any] | None = None,
    ) -> Self:
        hparams = dict(module.hparams)
        hparams["horizons"] = list(hparams["horizons"])
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        return cls(module.family, hparams, state, config, scaler, vocab, card or {})

    def save(self, directory: Path) -> Path:
        _write_meta(
            directory,
            {
                "family": self.family,
                "hparams": self.hparams,
                "feature_config": self.feature_config.to_dict(),
                "scaler": self.scaler.to_dict(),
                "vocab": self.vocab.to_dict(),
                "card": self.card,
            },
        )
        torch.save(self.state_dict, directory / WEIGHTS_FILE)
        return directory

    @classmethod
    def load(cls, directory: Path) -> Self:
        meta = _read_meta(directory)
        state = torch.load(directory / WEIGHTS_FILE, weights_only=True)
        return cls(
            meta["family"],
            meta["hparams"],
            state,
            FeatureConfig.from_dict(meta["feature_config"]),
            FeatureScaler.from_dict(meta["scaler"]),
            Vocab.from_dict(meta["vocab"]),
            meta.get("card", {}),
        )

    def window_set(
        self,
        bars: pd.DataFrame,
        sectors: dict[str, str | None] | None = None,
    ) -> WindowSet:
        """The newest window of every ticker in `bars` (canonical rows, already cut at as_of)."""
        sectors = {**self.vocab.ticker_sector, **(sectors or {})}
        rows: list[tuple] = []
        for ticker in sorted(bars["ticker"].unique()):
            close = ticker_frame(bars, ticker)["close"].dropna()
            found = _last_window(close, self.feature_config, self.scaler)
            if found is not None:
                rows.append((ticker, close.index[-1], *found))
        n = len(rows)
        return WindowSet(
            x=np.stack([r[2] for r in rows])
            if rows
            else np.empty(
                (0, self.feature_config.window, len(self.feature_config.features)), np.float32
            ),
            ticker=np.array([self.vocab.ticker_id(r[0]) for r in rows], np.int64),
            sector=np.array([self.vocab.sector_id(sectors.get(r[0])) for r in rows], np.int64),
            sigma=np.array([r[3] for r in rows], np.float32),
            y=np.full((n, len(self.horizons)), np.nan, np.float32),
            dates=np.array([r[1] for r in rows], "datetime64[ns]"),
            tickers=np.array([r[0] for r in rows], object),
        )

    def predict_bars(
        self,
        bars: pd.DataFrame,
        as_of: pd.Timestamp | None = None,
        sectors: dict[str, str | None] | None = None,
    ) -> pd.DataFrame:
        """Quantile forecasts from each ticker's bars up to `as_of` (default: its last bar)."""
        if as_of is not None:
            bars = bars[bars["date"] <= as_of]
        ws = self.window_set(bars, sectors)
        return to_frame(ws, predict(self.module, ws), self.horizons).drop(columns="y")


@dataclass
class EnsembleBundle:
    """Weights per horizon over member families, and the exact members they were fitted with."""

    weights: dict[int, dict[str, float]]
    members: dict[str, dict[str, Any]]  # family -> {"run_id": ..., "version": ...}
    card: dict[str, Any] = field(default_factory=dict)
    family: str = "ensemble"

    def combine(self, member_predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
        missing = set(self.families) - set(member_predictions)
        if missing:
            raise ValueError(f"ensemble needs predictions from {sorted(missing)}")
        # live predictions have no outcome yet; `align` carries y through, so give it one
        frames = {
            f: member_predictions[f].assign(y=member_predictions[f].get("y", np.nan))
            for f in self.families
        }
        return combine(align(frames), self.weights)

    @property
    def families(self) -> list[str]:
        return sorted(next(iter(self.weights.values())))

    def save(self, directory: Path) -> Path:
        return _write_meta(
            directory,
            {
                "family": self.family,
                "weights": {str(h): w for h, w in self.weights.items()},
                "members": self.members,
                "card": self.card,
            },
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        meta = _read_meta(directory)
        weights = {int(h): {f: float(x) for f, x in w.items()} for h, w in meta["weights"].items()}
        return cls(weights, meta["members"], meta.get("card", {}))
