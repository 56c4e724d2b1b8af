"""Walk-forward evaluation: fit on the past, score on the next block, for every fold.

Models and baselines are scored on exactly the same (date, ticker, horizon) rows by
`training.metrics.evaluate`. Validation predictions are kept too: the ensemble fits its weights
on them, never on test folds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from training.baselines import BASELINES, baseline, to_frame
from training.config import TrainConfig
from training.data import Fold, Panel, Vocab, final_fold, fit_scaler, walk_forward_folds, window_set
from training.fit import fit, predict
from training.metrics import HorizonMetrics, evaluate
from training.models import QuantileForecaster

Progress = Callable[[str], None]


@dataclass
class FoldResult:
    fold: Fold
    seconds: float
    test: pd.DataFrame  # model predictions on the test block
    val: pd.DataFrame  # model predictions on the validation block
    baselines: dict[str, pd.DataFrame]  # baseline predictions on the same test rows


@dataclass
class WalkForward:
    family: str
    folds: list[FoldResult] = field(default_factory=list)

    def predictions(self, split: str = "test") -> pd.DataFrame:
        """All folds' predictions with a `fold` column (split: test or val)."""
        return pd.concat(
            [getattr(r, split).assign(fold=r.fold.index) for r in self.folds], ignore_index=True
        )

    def baseline_predictions(self, name: str) -> pd.DataFrame:
        return pd.concat(
            [r.baselines[name].assign(fold=r.fold.index) for r in self.folds], ignore_index=True
        )


def folds_for(panel: Panel, cfg: TrainConfig) -> list[Fold]:
    return walk_forward_folds(panel.dates, cfg.n_folds, cfg.test_days, cfg.val_days, cfg.embargo)


def fit_on_fold(
    family: str, cfg: TrainConfig, panel: Panel, vocab: Vocab, fold: Fold, progress: bool = False
) -> tuple[QuantileForecaster, object]:
    """Scaler and network fitted on rows up to `fold.fit_end` only."""
    scaler = fit_scaler(panel, fold.fit_end)
    train = window_set(panel, scaler, vocab, end=fold.fit_end, stride=cfg.train_stride)
    val = window_set(panel, scaler, vocab, start=fold.val_start, end=fold.val_end)
    return fit(family, cfg, train, val, vocab, progress), scaler


def run(
    family: str,
    cfg: TrainConfig,
    panel: Panel,
    vocab: Vocab,
    report: Progress = lambda _: None,
    progress: bool = False,
) -> WalkForward:
    """Every fold: fit, then predict validation and test windows; baselines on the same rows."""
    result = WalkForward(family)
    for fold in folds_for(panel, cfg):
        started = time.perf_counter()
        report(
            f"{family}: fold {fold.index + 1}/{cfg.n_folds} (test {fold.test_start.date()} → "
            f"{fold.test_end.date()})"
        )
        module, scaler = fit_on_fold(family, cfg, panel, vocab, fold, progress)
        test = window_set(panel, scaler, vocab, fold.test_start, fold.test_end).labelled()
        val = window_set(panel, scaler, vocab, fold.val_start, fold.val_end).labelled()
        result.folds.append(
            FoldResult(
                fold,
                time.perf_counter() - started,
                test=to_frame(test, predict(module, test), cfg.horizons),
                val=to_frame(val, predict(module, val), cfg.horizons),
                baselines={
                    name: to_frame(test, baseline(name, test, panel), cfg.horizons)
                    for name in BASELINES
                },
            )
        )
    return result


def fit_final(
    family: str, cfg: TrainConfig, panel: Panel, vocab: Vocab, progress: bool = False
) -> tuple[QuantileForecaster, object, pd.DataFrame, Fold]:
    """The production model: fitted on all labelled history; returns its validation predictions."""
    fold = final_fold(panel.dates, cfg.val_days, cfg.embargo)
    module, scaler = fit_on_fold(family, cfg, panel, vocab, fold, progress)
    val = window_set(panel, scaler, vocab, fold.val_start, fold.val_end).labelled()
    return module, scaler, to_frame(val, predict(module, val), cfg.horizons), fold


def score(
    frames: pd.DataFrame,
    random_walk: pd.DataFrame,
    cfg: TrainConfig,
) -> dict[str, list[HorizonMetrics]]:
    """Metrics overall and per fold, each on the rows shared with the random walk."""
    out = {"all": evaluate(frames, random_walk, cfg.cost_bps)}
    for fold, part in frames.groupby("fold"):
        out[f"fold{fold}"] = evaluate(part, random_walk[random_walk["fold"] == fold], cfg.cost_bps)
    return out
