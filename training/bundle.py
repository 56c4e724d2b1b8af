"""Everything a trained forecaster needs to predict, saved as one folder (and one MLflow model).

A network bundle holds the weights *and* the feature config, fitted scaler and vocabulary from
training, so serving builds inputs with exactly the code and parameters training used. A
classical bundle holds each ticker's fitted GARCH parameters and standardised quantiles; an
ensemble bundle holds weights and the exact members they were fitted with.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd

from features.bars import ticker_frame
from features.windows import MARKET_TICKER, FeatureConfig, FeatureScaler, latest_windows
from training import classical, conformal
from training.baselines import to_frame
from training.data import Vocab, WindowSet, latest_sigma, static_scale
from training.ensemble import align, combine

if TYPE_CHECKING:  # torch is imported only where a network is built or run: an ensemble-only
    import torch  # process (the ensemble deployment) never pays for it

    from training.models import QuantileForecaster

WEIGHTS_FILE = "weights.pt"
BUNDLE_FILE = "bundle.json"
SCALE_DIR = "scale"  # a network's GARCH fits, a classical bundle of their own


def _write_meta(directory: Path, meta: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return directory


def _read_meta(directory: Path) -> dict[str, Any]:
    return json.loads((directory / BUNDLE_FILE).read_text())


def bars_to_closes(bars: pd.DataFrame, as_of: pd.Timestamp | None = None) -> dict[str, pd.Series]:
    """Each ticker's date-indexed closes from canonical bars, up to `as_of` when given."""
    if as_of is not None:
        bars = bars[bars["date"] <= as_of]
    return {
        ticker: ticker_frame(bars, ticker)["close"].dropna()
        for ticker in sorted(bars["ticker"].unique())
    }


class FromBars(ABC):
    """`predict_bars` for a bundle that predicts from closes (the pyfunc's input is bars)."""

    @abstractmethod
    def predict_closes(
        self, closes: dict[str, pd.Series], sectors: dict[str, str | None] | None = None
    ) -> pd.DataFrame:
        """Quantile forecasts after each ticker's last close."""

    def predict_bars(
        self,
        bars: pd.DataFrame,
        as_of: pd.Timestamp | None = None,
        sectors: dict[str, str | None] | None = None,
    ) -> pd.DataFrame:
        """Quantile forecasts from each ticker's bars up to `as_of` (default: its last bar)."""
        return self.predict_closes(bars_to_closes(bars, as_of), sectors)


@dataclass
class ForecastBundle(FromBars):
    family: str
    hparams: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    feature_config: FeatureConfig
    scaler: FeatureScaler
    vocab: Vocab
    card: dict[str, Any] = field(default_factory=dict)
    calibration: conformal.Offsets | None = None  # per-tail band offsets from validation
    scale: ClassicalBundle | None = None  # GARCH fits giving the scale (None: trailing σ × √h)

    @property
    def horizons(self) -> tuple[int, ...]:
        return tuple(self.hparams["horizons"])

    @cached_property
    def module(self) -> QuantileForecaster:
        from training.models import FAMILIES

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
        calibration: conformal.Offsets | None = None,
        scale: ClassicalBundle | None = None,
    ) -> Self:
        hparams = dict(module.hparams)
        hparams["horizons"] = list(hparams["horizons"])
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        return cls(
            module.family, hparams, state, config, scaler, vocab, card or {}, calibration, scale
        )

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
                "calibration": self.calibration.to_dict() if self.calibration else None,
            },
        )
        import torch

        torch.save(self.state_dict, directory / WEIGHTS_FILE)
        if self.scale is not None:
            self.scale.save(directory / SCALE_DIR)
        return directory

    @classmethod
    def load(cls, directory: Path) -> Self:
        import torch

        meta = _read_meta(directory)
        state = torch.load(directory / WEIGHTS_FILE, weights_only=True)
        scale_dir = directory / SCALE_DIR
        return cls(
            meta["family"],
            meta["hparams"],
            state,
            FeatureConfig.from_dict(meta["feature_config"]),
            FeatureScaler.from_dict(meta["scaler"]),
            Vocab.from_dict(meta["vocab"]),
            meta.get("card", {}),
            conformal.Offsets.from_dict(meta.get("calibration")),
            ClassicalBundle.load(scale_dir) if scale_dir.exists() else None,
        )

    def window_set(
        self,
        bars: pd.DataFrame,
        sectors: dict[str, str | None] | None = None,
    ) -> WindowSet:
        """The newest window of every ticker in `bars` (canonical rows, already cut at as_of)."""
        return self.window_set_closes(bars_to_closes(bars), sectors)

    def window_set_closes(
        self,
        closes: dict[str, pd.Series],
        sectors: dict[str, str | None] | None = None,
        market: pd.Series | None = None,
    ) -> WindowSet:
        """The newest window of each ticker's date-indexed closes (ascending, complete), built
        for all tickers at once (see features.windows.latest_windows); `market`: the market's
        closes (default: the market's own entry in `closes`), for the market features."""
        sectors = {**self.vocab.ticker_sector, **(sectors or {})}
        if market is None and self.feature_config.needs_market:
            market = closes.get(MARKET_TICKER)
            if market is None:
                raise ValueError(f"this model's features need {MARKET_TICKER}'s closes")
        windows = latest_windows(closes, self.feature_config, self.scaler, market)
        sigma = latest_sigma({t: closes[t] for t in windows})
        scales = self._scales({t: closes[t] for t in windows}, sigma)
        kept = [t for t in windows if np.isfinite(sigma[t]) and np.all(scales[t] > 0)]
        if not kept:
            cfg = self.feature_config
            x = np.empty((0, cfg.window, len(cfg.features)), np.float32)
        else:
            x = np.stack([windows[t] for t in kept])
        return WindowSet(
            x=x,
            ticker=np.array([self.vocab.ticker_id(t) for t in kept], np.int64),
            sector=np.array([self.vocab.sector_id(sectors.get(t)) for t in kept], np.int64),
            sigma=np.array([sigma[t] for t in kept], np.float32),
            y=np.full((len(kept), len(self.horizons)), np.nan, np.float32),
            dates=np.array([closes[t].index[-1] for t in kept], "datetime64[ns]"),
            tickers=np.array(kept, object),
            scale=np.array([scales[t] for t in kept], np.float32).reshape(-1, len(self.horizons)),
        )

    def _scales(self, closes: dict[str, pd.Series], sigma: dict[str, float]) -> dict[str, Any]:
        """Per ticker, the [horizons] scale the network predicts in units of."""
        if self.scale is None:
            return {
                t: static_scale(np.array([s], np.float32), self.horizons)[0]
                for t, s in sigma.items()
            }
        variance = self.scale.variances(closes)
        return {t: np.sqrt(variance[t]) if t in variance else np.zeros(1) for t in closes}

    def predict_closes(
        self,
        closes: dict[str, pd.Series],
        sectors: dict[str, str | None] | None = None,
        market: pd.Series | None = None,
    ) -> pd.DataFrame:
        """Quantile forecasts from each ticker's closes (serving's path: no bar frame)."""
        return self._predict(self.window_set_closes(closes, sectors, market))

    def _predict(self, ws: WindowSet) -> pd.DataFrame:
        from training.fit import predict

        frame = to_frame(ws, predict(self.module, ws), self.horizons).drop(columns="y")
        return conformal.apply(frame, self.calibration)


@dataclass
class EnsembleBundle:
    """Weights per horizon over member families, and the exact members they were fitted with."""

    weights: dict[int, dict[str, float]]
    members: dict[str, dict[str, Any]]  # family -> {"run_id": ..., "version": ...}
    card: dict[str, Any] = field(default_factory=dict)
    family: str = "ensemble"
    calibration: conformal.Offsets | None = None  # per-tail band offsets from validation

    def combine(self, member_predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
        missing = set(self.families) - set(member_predictions)
        if missing:
            raise ValueError(f"ensemble needs predictions from {sorted(missing)}")
        # live predictions have no outcome yet; `align` carries y through, so give it one
        frames = {
            f: member_predictions[f].assign(y=member_predictions[f].get("y", np.nan))
            for f in self.families
        }
        return conformal.apply(combine(align(frames), self.weights), self.calibration)

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
                "calibration": self.calibration.to_dict() if self.calibration else None,
            },
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        meta = _read_meta(directory)
        weights = {int(h): {f: float(x) for f, x in w.items()} for h, w in meta["weights"].items()}
        calibration = conformal.Offsets.from_dict(meta.get("calibration"))
        return cls(weights, meta["members"], meta.get("card", {}), calibration=calibration)


MIN_RETURNS = 60  # fewer daily returns than this: no classical forecast for the ticker


@dataclass
class ClassicalBundle(FromBars):
    """The served classical family: a GARCH-type model (`model`: garch or gjr, whichever was
    stronger on validation) with each ticker's own fitted parameters and standardised
    quantiles. A ticker it was not fitted on (a user import) gets the median dynamics of the
    fitted ones, its own variance level (variance targeting) and the median quantiles."""

    model: str
    horizons: tuple[int, ...]
    params: dict[str, dict[str, float]]  # ticker -> omega, alpha[1], gamma[1], beta[1], ...
    z: dict[str, dict[int, list[float]]]  # ticker -> horizon -> standardised q10, q50, q90
    card: dict[str, Any] = field(default_factory=dict)
    family: str = "garch"

    @cached_property
    def _pooled(self) -> tuple[dict[str, float], dict[int, np.ndarray]]:
        z = {
            h: np.median(np.array([by[h] for by in self.z.values()]), axis=0) for h in self.horizons
        }
        return classical.pooled_params(self.params), z

    def predict_closes(
        self,
        closes: dict[str, pd.Series],
        sectors: dict[str, str | None] | None = None,
    ) -> pd.DataFrame:
        """Quantile forecasts after each ticker's last close (no sector is needed)."""
        _, pooled_z = self._pooled
        rows = []
        for ticker, variance in self.variances(closes).items():
            z = self.z.get(ticker) or {h: list(pooled_z[h]) for h in self.horizons}
            for h, s in zip(self.horizons, np.sqrt(variance), strict=True):
                q10, q50, q90 = (float(s * level) for level in z[h])
                rows.append((ticker, closes[ticker].index[-1], h, q10, q50, q90))
        return pd.DataFrame(rows, columns=["ticker", "date", "horizon", "q10", "q50", "q90"])

    def variances(self, closes: dict[str, pd.Series]) -> dict[str, np.ndarray]:
        """Per ticker with enough history, the [horizons] variance forecasts after its last
        close."""
        out = {}
        for ticker, close in closes.items():
            returns = np.diff(np.log(close.to_numpy(np.float64)))
            returns = returns[np.isfinite(returns)]
            if len(returns) < MIN_RETURNS:
                continue
            params = self.params.get(ticker)
            if params is None:
                pooled, _ = self._pooled
                params = {**pooled, "omega": classical.target_omega(returns, pooled)}
            variance = classical.garch_cumulative_variance(returns, params, self.horizons)
            out[ticker] = np.maximum(variance, classical.VARIANCE_FLOOR)
        return out

    def save(self, directory: Path) -> Path:
        return _write_meta(
            directory,
            {
                "family": self.family,
                "model": self.model,
                "horizons": list(self.horizons),
                "params": self.params,
                "z": {t: {str(h): list(q) for h, q in by.items()} for t, by in self.z.items()},
                "card": self.card,
            },
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        meta = _read_meta(directory)
        z = {t: {int(h): list(q) for h, q in by.items()} for t, by in meta["z"].items()}
        return cls(
            meta["model"],
            tuple(meta["horizons"]),
            meta["params"],
            z,
            meta.get("card", {}),
            meta["family"],
        )


Bundle = ForecastBundle | ClassicalBundle | EnsembleBundle


def load_folder(directory: Path) -> Bundle:
    """Whichever kind of bundle the folder holds."""
    family = _read_meta(directory).get("family")
    if family == "ensemble":
        return EnsembleBundle.load(directory)
    if family == "garch":
        return ClassicalBundle.load(directory)
    return ForecastBundle.load(directory)
