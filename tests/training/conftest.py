"""Small real data and a quickly fitted model for the training tests."""

from __future__ import annotations

import pandas as pd
import pytest

from features.windows import FeatureConfig
from tests.utils import TINY
from training.config import TrainConfig
from training.data import Panel, Vocab, build_panel
from training.models import QuantileForecaster
from training.walkforward import fit_on_fold, folds_for

TICKERS = ("AAPL", "KO", "XOM", "JPM")


@pytest.fixture(scope="session")
def tiny_cfg() -> TrainConfig:
    return TINY


@pytest.fixture(scope="session")
def tiny_bars(bundled_bars: pd.DataFrame) -> pd.DataFrame:
    # the market's own bars too: the market-context features are measured against them
    keep = bundled_bars["ticker"].isin((*TICKERS, "SPX")) & (bundled_bars["date"] >= "2019-01-01")
    return bundled_bars[keep].reset_index(drop=True)


@pytest.fixture(scope="session")
def tiny_panel(tiny_bars: pd.DataFrame, tiny_cfg: TrainConfig, bundled_bars: pd.DataFrame) -> Panel:
    return build_panel(tiny_bars, FeatureConfig(window=tiny_cfg.window), tiny_cfg.horizons)


@pytest.fixture(scope="session")
def tiny_vocab() -> Vocab:
    return Vocab.build(
        {
            "AAPL": "Information Technology",
            "KO": "Consumer Staples",
            "XOM": "Energy",
            "JPM": "Financials",
        }
    )


@pytest.fixture(scope="session")
def tiny_model(
    tiny_cfg: TrainConfig,
    tiny_panel: Panel,
    tiny_vocab: Vocab,
) -> tuple[QuantileForecaster, object]:
    fold = folds_for(tiny_panel, tiny_cfg)[-1]
    return fit_on_fold("hybrid", tiny_cfg, tiny_panel, tiny_vocab, fold)
