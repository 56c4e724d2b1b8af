"""Walk-forward evaluation: fit on the past, score on the next block, for every fold.

Models and baselines are scored on exactly the same (date, ticker, horizon) rows by
`training.metrics.evaluate`. Validation predictions are kept too: the ensemble fits its weights
on them, and each network's bands are calibrated on them (`training.conformal`), never on test
folds. A network predicts in units of the GARCH forecast fitted on the fold's fit rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.windows import FeatureScaler
from training import conformal
from training.baselines import BASELINES, ClassicalFits, baseline, classical_scale, to_frame
from training.bundle import ClassicalBundle
from training.classical import CLASSICAL
from training.config import TrainConfig
from training.data import (
    Fold,
    Panel,
    Scale,
    Vocab,
    WindowSet,
    final_fold,
    fit_scaler,
    walk_forward_folds,
    window_set,
)
from training.fit import fit, predict
from training.metrics import HorizonMetrics, evaluate, row_pinball
from training.models import QuantileForecaster

Progress = Callable[[str], None]


@dataclass
class FoldResult:
    fold: Fold
    seconds: float
    test: pd.DataFrame  # model predictions on the test block
    val: pd.DataFrame  # model predictions on the validation block
    baselines: dict[str, pd.DataFrame]  # baseline predictions on the same test rows
    val_baselines: dict[str, pd.DataFrame] = field(default_factory=dict)  # ... and val rows


@dataclass
class WalkForward:
    family: str
    folds: list[FoldResult] = field(default_factory=list)

    def predictions(self, split: str = "test") -> pd.DataFrame:
        """All folds' predictions with a `fold` column (split: test or val)."""
        return pd.concat(
            [getattr(r, split).assign(fold=r.fold.index) for r in self.folds], ignore_index=True
        )

    def baseline_predictions(self, name: str, split: str = "test") -> pd.DataFrame:
        """A baseline's predictions on every fold's `split` rows (test or val)."""
        return pd.concat(
            [
                (r.baselines if split == "test" else r.val_baselines)[name].assign(
                    fold=r.fold.index
                )
                for r in self.folds
            ],
            ignore_index=True,
        )


def folds_for(panel: Panel, cfg: TrainConfig) -> list[Fold]:
    return walk_forward_folds(panel.dates, cfg.n_folds, cfg.test_days, cfg.val_days, cfg.embargo)


def network_scale(cfg: TrainConfig, fits: ClassicalFits, fold: Fold) -> Scale | None:
    """What the networks predict in units of: GARCH's h-day volatility fitted on the fold's fit
    rows (`scale: garch`), or the trailing σ × √h (`scale: static`)."""
    if cfg.scale == "static":
        return None
    return classical_scale(fits, cfg.scale, fold.fit_end)


def fold_windows(
    cfg: TrainConfig, panel: Panel, vocab: Vocab, fold: Fold, fits: ClassicalFits
) -> tuple[FeatureScaler, WindowSet, WindowSet]:
    """The fold's scaler (fit rows only), training windows and validation windows."""
    scaler = fit_scaler(panel, fold.fit_end)
    scale = network_scale(cfg, fits, fold)
    train = window_set(panel, scaler, vocab, end=fold.fit_end, stride=cfg.train_stride, scale=scale)
    val = window_set(panel, scaler, vocab, fold.val_start, fold.val_end, scale=scale)
    return scaler, train, val


def fit_on_fold(
    family: str,
    cfg: TrainConfig,
    panel: Panel,
    vocab: Vocab,
    fold: Fold,
    progress: bool = False,
    fits: ClassicalFits | None = None,
) -> tuple[QuantileForecaster, FeatureScaler]:
    """Scaler and network fitted on rows up to `fold.fit_end` only."""
    scaler, train, val = fold_windows(cfg, panel, vocab, fold, fits or ClassicalFits(panel))
    return fit(family, cfg, train, val, vocab, progress), scaler


def run(
    family: str | None,
    cfg: TrainConfig,
    panel: Panel,
    vocab: Vocab,
    report: Progress = lambda _: None,
    progress: bool = False,
) -> WalkForward:
    """Every fold: fit, then predict validation and test windows; baselines on the same rows.
    With `family` None, the baselines alone (no network): the yardstick in a few minutes."""
    result = WalkForward(family or "baselines")
    fits = ClassicalFits(panel)
    for fold in folds_for(panel, cfg):
        started = time.perf_counter()
        report(
            f"{result.family}: fold {fold.index + 1}/{cfg.n_folds} (test "
            f"{fold.test_start.date()} → {fold.test_end.date()})"
        )
        if family is None:
            module, scaler, scale = None, fit_scaler(panel, fold.fit_end), None
        else:
            module, scaler = fit_on_fold(family, cfg, panel, vocab, fold, progress, fits)
            scale = network_scale(cfg, fits, fold)
        test = window_set(panel, scaler, vocab, fold.test_start, fold.test_end, scale=scale)
        val = window_set(panel, scaler, vocab, fold.val_start, fold.val_end, scale=scale)
        test, val = test.labelled(), val.labelled()
        val_predicted = _predicted(module, val, cfg)
        offsets = calibration(cfg, val_predicted)
        result.folds.append(
            FoldResult(
                fold,
                time.perf_counter() - started,
                test=conformal.apply(_predicted(module, test, cfg), offsets),
                val=conformal.apply(val_predicted, offsets),
                baselines=_baselines(test, BASELINES, panel, fold, fits),
                val_baselines=_baselines(val, ("random_walk", *CLASSICAL), panel, fold, fits),
            )
        )
    return result


def calibration(cfg: TrainConfig, val: pd.DataFrame) -> conformal.Offsets | None:
    """Per-tail conformal offsets from validation predictions (`calibrate: false`: none)."""
    return conformal.fit(val) if cfg.calibrate and not val.empty else None


def _predicted(module: QuantileForecaster | None, ws: WindowSet, cfg: TrainConfig) -> pd.DataFrame:
    return pd.DataFrame() if module is None else to_frame(ws, predict(module, ws), cfg.horizons)


def _baselines(
    ws: WindowSet, names: tuple[str, ...], panel: Panel, fold: Fold, fits: ClassicalFits
) -> dict[str, pd.DataFrame]:
    return {
        name: to_frame(ws, baseline(name, ws, panel, fold.fit_end, fits), panel.horizons)
        for name in names
    }


def strongest_classical(result: WalkForward, candidates: tuple[str, ...] = CLASSICAL) -> str:
    """The classical baseline (of `candidates`) with the lowest validation loss relative to the
    random walk (averaged over horizons, on the rows they all forecast): picked on validation
    blocks only, never on the test folds it is then compared on."""
    val_rw = result.baseline_predictions("random_walk", "val")
    frames = {name: result.baseline_predictions(name, "val") for name in candidates}
    keys = ["date", "ticker", "horizon"]
    shared = val_rw[keys]
    for frame in frames.values():
        shared = shared.merge(frame[keys], on=keys)

    def relative(frame: pd.DataFrame) -> float:
        mine = shared.merge(frame, on=keys)
        walk = shared.merge(val_rw, on=keys)
        ratios = [
            row_pinball(mine[mine["horizon"] == h]).mean()
            / row_pinball(walk[walk["horizon"] == h]).mean()
            for h in sorted(shared["horizon"].unique())
        ]
        return float(np.mean(ratios))

    return min(frames, key=lambda name: relative(frames[name]))


def classical_bundle(
    fits: ClassicalFits, model: str, fit_end: pd.Timestamp, card: dict | None = None
) -> ClassicalBundle:
    """`model` fitted per ticker of the panel on returns up to `fit_end`, as served."""
    fitted = {t: fits.fitted(model, t, fit_end) for t in fits.panel.series}
    found = {t: f for t, f in fitted.items() if f is not None}
    return ClassicalBundle(
        model,
        fits.panel.horizons,
        {t: f.params for t, f in found.items()},
        {t: {h: [float(v) for v in q] for h, q in f.z.items()} for t, f in found.items()},
        card or {},
    )


@dataclass
class FinalFit:
    """The production model and what serving needs beside it."""

    module: QuantileForecaster
    scaler: FeatureScaler
    val: pd.DataFrame  # its (calibrated) predictions on the held-out validation block
    fold: Fold
    offsets: conformal.Offsets | None
    scale: ClassicalBundle | None  # the GARCH fits its scale comes from (None: static)


def fit_final(
    family: str, cfg: TrainConfig, panel: Panel, vocab: Vocab, progress: bool = False
) -> FinalFit:
    """The production model: fitted on all labelled history but the newest validation block,
    which early stopping and the band calibration use."""
    fold = final_fold(panel.dates, cfg.val_days, cfg.embargo)
    fits = ClassicalFits(panel)
    scaler, train, val = fold_windows(cfg, panel, vocab, fold, fits)
    module = fit(family, cfg, train, val, vocab, progress)
    val = val.labelled()
    predicted = to_frame(val, predict(module, val), cfg.horizons)
    offsets = calibration(cfg, predicted)
    scale = None if cfg.scale == "static" else classical_bundle(fits, cfg.scale, fold.fit_end)
    return FinalFit(module, scaler, conformal.apply(predicted, offsets), fold, offsets, scale)


def score(
    frames: pd.DataFrame,
    random_walk: pd.DataFrame,
    cfg: TrainConfig,
    reference: tuple[str, pd.DataFrame] | None = None,
) -> dict[str, list[HorizonMetrics]]:
    """Metrics overall and per fold, each on the rows shared with the random walk (and compared
    with `reference`, the strongest classical baseline, when given). Rank IC ranks single
    stocks only."""
    names = single_stocks()
    out = {"all": evaluate(frames, random_walk, cfg.cost_bps, reference, names)}
    for fold, part in frames.groupby("fold"):
        out[f"fold{fold}"] = _evaluate_where(
            part, random_walk, reference, cfg, names, random_walk["fold"] == fold
        )
    calm = pd.DatetimeIndex(frames["date"]).year != EXCLUDED_YEAR
    if calm.any() and not calm.all():  # 2020 alone gives most of any volatility model's skill
        out[f"ex{EXCLUDED_YEAR}"] = _evaluate_where(
            frames[calm],
            random_walk,
            reference,
            cfg,
            names,
            pd.DatetimeIndex(random_walk["date"]).year != EXCLUDED_YEAR,
        )
    return out


EXCLUDED_YEAR = 2020


def _evaluate_where(
    part: pd.DataFrame,
    random_walk: pd.DataFrame,
    reference: tuple[str, pd.DataFrame] | None,
    cfg: TrainConfig,
    names: frozenset[str],
    rw_rows: pd.Series,
) -> list[HorizonMetrics]:
    """`evaluate` of `part` against the random walk's (and reference's) matching rows."""
    in_part = None
    if reference is not None:
        ref = reference[1]
        in_part = (reference[0], ref.merge(part[["date", "ticker", "horizon"]]))
    return evaluate(part, random_walk[rw_rows], cfg.cost_bps, in_part, names)


def single_stocks() -> frozenset[str]:
    """The universe's equities (no index, no factor ETF): what a stock-picking metric ranks."""
    from features.datasets import load_universe

    return frozenset(i.ticker for i in load_universe().instruments if i.asset_type == "equity")
