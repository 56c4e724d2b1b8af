"""Forecaster shapes, non-crossing quantiles, unknown tickers and no look-ahead in predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from features.bars import ticker_frame
from training.bundle import ForecastBundle
from training.config import TrainConfig
from training.data import Panel, Vocab
from training.models import FAMILIES, QuantileForecaster


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_output_shape_and_quantiles_never_cross(family: str) -> None:
    torch.manual_seed(0)
    model = FAMILIES[family](
        n_features=13, n_tickers=5, n_sectors=3, window=12, hidden=8, layers=2, heads=2
    )
    # large inputs push the raw outputs far from the initial random walk
    x = torch.randn(64, 12, 13) * 50
    q = model(x, torch.randint(0, 6, (64,)), torch.randint(0, 4, (64,)), torch.rand(64) * 0.05)
    assert q.shape == (64, 3, 3)
    assert torch.all(q[..., 0] <= q[..., 1]) and torch.all(q[..., 1] <= q[..., 2])


def test_untrained_model_starts_at_the_random_walk() -> None:
    model = FAMILIES["lstm"](n_features=4, n_tickers=2, n_sectors=1, window=5, hidden=8)
    sigma = torch.full((3,), 0.02)
    q = model(
        torch.zeros(3, 5, 4),
        torch.zeros(3, dtype=torch.long),
        torch.zeros(3, dtype=torch.long),
        sigma,
    ).detach()
    expected_q90 = 1.2815515655446004 * 0.02 * np.sqrt([1, 5, 20])
    np.testing.assert_allclose(q[0, :, 2], expected_q90, rtol=0.05)
    np.testing.assert_allclose(q[0, :, 1], 0.0, atol=0.002)


def test_unknown_ticker_gets_the_shared_embedding(
    tiny_model: tuple[QuantileForecaster, object],
    tiny_vocab: Vocab,
) -> None:
    assert tiny_vocab.ticker_id("NEWCO") == 0
    assert tiny_vocab.sector_id(None) == 0 and tiny_vocab.ticker_id("KO") > 0
    module, _ = tiny_model
    assert module.ticker_embedding.num_embeddings == len(tiny_vocab.tickers) + 1


def test_prediction_at_t_ignores_bars_after_t(
    tiny_model: tuple[QuantileForecaster, object],
    tiny_panel: Panel,
    tiny_vocab: Vocab,
    tiny_bars: pd.DataFrame,
) -> None:
    module, scaler = tiny_model
    bundle = ForecastBundle.from_module(module, tiny_panel.config, scaler, tiny_vocab)
    as_of = pd.Timestamp("2021-06-30")
    future_changed = tiny_bars.copy()
    later = future_changed["date"] > as_of
    future_changed.loc[later, "close"] *= 3.0
    a = bundle.predict_bars(tiny_bars, as_of=as_of)
    b = bundle.predict_bars(future_changed, as_of=as_of)
    assert (a["date"] == as_of).all() and len(a) == 5 * 3  # four stocks and the market
    pd.testing.assert_frame_equal(a, b)
    # an imported ticker (unknown to the vocabulary) is predicted too, against the market
    newco = tiny_bars[tiny_bars["ticker"] == "KO"].assign(ticker="NEWCO")
    market = tiny_bars[tiny_bars["ticker"] == "SPX"]
    predicted = bundle.predict_bars(pd.concat([newco, market]), as_of=as_of)
    assert (predicted["ticker"] == "NEWCO").sum() == 3
    with pytest.raises(ValueError, match="need SPX"):
        bundle.predict_bars(newco, as_of=as_of)


def test_bundle_round_trips_through_disk(
    tiny_model: tuple[QuantileForecaster, object],
    tiny_panel: Panel,
    tiny_vocab: Vocab,
    tiny_bars: pd.DataFrame,
    tmp_path,
    tiny_cfg: TrainConfig,
) -> None:
    module, scaler = tiny_model
    bundle = ForecastBundle.from_module(module, tiny_panel.config, scaler, tiny_vocab)
    loaded = ForecastBundle.load(bundle.save(tmp_path / "b"))
    assert loaded.feature_config == tiny_panel.config and loaded.scaler == scaler
    pd.testing.assert_frame_equal(bundle.predict_bars(tiny_bars), loaded.predict_bars(tiny_bars))
    assert loaded.horizons == tiny_cfg.horizons


def test_latest_sigma_matches_trailing_sigma_at_the_newest_bar(bundled_bars: pd.DataFrame) -> None:
    from training.data import latest_sigma, trailing_sigma

    closes = {
        t: ticker_frame(bundled_bars, t)["close"].iloc[-n:]
        for t, n in (("AAPL", 300), ("KO", 61), ("XOM", 30), ("JPM", 15))
    }
    got = latest_sigma(closes)
    for ticker, close in closes.items():
        expected = float(trailing_sigma(close).iloc[-1])
        if np.isnan(expected):
            assert np.isnan(got[ticker]), ticker  # JPM: 14 returns are too few
        else:
            assert got[ticker] == pytest.approx(expected, rel=1e-9), ticker
