"""Model inputs: no look-ahead (property-based), scaler fitted on training rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.bars import ticker_frame
from features.windows import (
    OWN_FEATURES,
    FeatureConfig,
    FeatureScaler,
    build_features,
    forward_log_returns,
    latest_windows,
    make_windows,
)

CONFIG = FeatureConfig(window=10)  # every feature, the market context included


@st.composite
def price_paths(draw: st.DrawFn) -> tuple[pd.Series, int]:
    n = draw(st.integers(min_value=220, max_value=320))
    steps = draw(st.lists(st.floats(-0.08, 0.08, allow_nan=False), min_size=n, max_size=n))
    start = draw(st.floats(1.0, 500.0))
    close = pd.Series(
        start * np.exp(np.cumsum(steps)),
        index=pd.bdate_range("2020-01-01", periods=n),
        name="close",
    )
    cut = draw(st.integers(min_value=CONFIG.window + 205, max_value=n - 1))
    return close, cut


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(price_paths(), st.floats(0.2, 5.0))
def test_features_and_windows_at_t_ignore_every_bar_after_t(
    case: tuple[pd.Series, int], shock: float
) -> None:
    close, cut = case
    market = (close * 0.3 + 50).iloc[::-1].set_axis(close.index)  # a different path
    # Rewrite the future after `cut`, of the stock and the market: nothing at or before `cut`
    # may change.
    future_changed, market_changed = close.copy(), market.copy()
    future_changed.iloc[cut + 1 :] *= shock
    market_changed.iloc[cut + 1 :] /= shock
    full = build_features(close, CONFIG, market)
    altered = build_features(future_changed, CONFIG, market_changed)
    prefix = build_features(close.iloc[: cut + 1], CONFIG, market.iloc[: cut + 1])
    pd.testing.assert_frame_equal(full.iloc[: cut + 1], altered.iloc[: cut + 1])
    pd.testing.assert_frame_equal(full.iloc[: cut + 1], prefix)
    x_full, ends_full = make_windows(full, CONFIG.window)
    x_prefix, ends_prefix = make_windows(prefix, CONFIG.window)
    keep = ends_full <= close.index[cut]
    assert ends_full[keep].equals(ends_prefix)
    np.testing.assert_array_equal(x_full[keep], x_prefix)
    if len(ends_prefix):
        assert ends_prefix[-1] == close.index[cut]  # the window ending at t is available at t


def test_window_rows_are_the_trailing_bars(bundled_bars: pd.DataFrame) -> None:
    close = ticker_frame(bundled_bars, "KO")["close"].iloc[:600]
    features = build_features(close, CONFIG, ticker_frame(bundled_bars, "SPX")["close"])
    x, ends = make_windows(features, CONFIG.window)
    assert x.shape[1:] == (CONFIG.window, len(CONFIG.features)) and x.dtype == np.float32
    t = features.index.get_loc(ends[5])
    np.testing.assert_allclose(
        x[5], features.iloc[t - CONFIG.window + 1 : t + 1].to_numpy(), rtol=1e-6
    )
    assert not np.isnan(x).any()


def test_targets_look_forward_and_are_nan_at_the_edge() -> None:
    close = pd.Series([100.0, 110.0, 121.0, 133.1], index=pd.bdate_range("2024-01-01", periods=4))
    targets = forward_log_returns(close, (1, 2))
    assert targets["h1"].iloc[0] == pytest.approx(np.log(1.1))
    assert targets["h2"].iloc[1] == pytest.approx(np.log(1.21))
    assert targets["h1"].isna().tolist() == [False, False, False, True]


def test_scaler_uses_training_rows_only_and_round_trips(bundled_bars: pd.DataFrame) -> None:
    features = build_features(
        ticker_frame(bundled_bars, "PG")["close"],
        CONFIG,
        ticker_frame(bundled_bars, "SPX")["close"],
    )
    train, test = features.loc[:"2015"], features.loc["2016":]
    scaler = FeatureScaler.fit(train)
    assert scaler.mean == pytest.approx(train.dropna().mean().tolist())
    shocked = FeatureScaler.fit(pd.concat([train, test * 10]))
    assert shocked.mean != pytest.approx(scaler.mean)  # test rows would have moved it
    restored = FeatureScaler.from_dict(scaler.to_dict())
    pd.testing.assert_frame_equal(restored.transform(test), scaler.transform(test))
    assert FeatureConfig.from_dict(CONFIG.to_dict()) == CONFIG
    scaled = scaler.transform(train).dropna()
    np.testing.assert_allclose(scaled.mean(), 0, atol=1e-9)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown features"):
        FeatureConfig(features=("log_ret_1", "tomorrow_close"))
    with pytest.raises(ValueError, match="positive"):
        build_features(pd.Series([1.0, -1.0, 2.0]), CONFIG)
    with pytest.raises(ValueError, match="market features need SPX"):
        build_features(pd.Series([1.0, 1.5, 2.0]), CONFIG)
    own = FeatureConfig(features=OWN_FEATURES, window=10)
    assert not own.needs_market and CONFIG.needs_market


def test_batched_latest_windows_equal_each_ticker_built_alone(bundled_bars: pd.DataFrame) -> None:
    """Serving builds a whole batch in one wide frame; every ticker must get exactly the window
    its own series gives (different lengths, a close-only index, one too short to use)."""
    config = FeatureConfig(window=30)
    closes = {
        "AAPL": ticker_frame(bundled_bars, "AAPL")["close"].iloc[-400:],
        "KO": ticker_frame(bundled_bars, "KO")["close"].iloc[-260:],
        "XOM": ticker_frame(bundled_bars, "XOM")["close"].iloc[-31:],  # warm-up never ends
        "MSFT": ticker_frame(bundled_bars, "MSFT")["close"].iloc[-300:],
        "JPM": ticker_frame(bundled_bars, "JPM")["close"].iloc[-20:],  # shorter than a window
    }
    market = ticker_frame(bundled_bars, "SPX")["close"]
    scaler = FeatureScaler.fit(build_features(closes["AAPL"], config, market))
    batched = latest_windows(closes, config, scaler, market)
    assert set(batched) == {"AAPL", "KO", "MSFT"}
    for ticker, window in batched.items():
        own = build_features(closes[ticker], config, market)
        x, ends = make_windows(scaler.transform(own), 30)
        assert ends[-1] == closes[ticker].index[-1]
        np.testing.assert_allclose(window, x[-1], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="positive and complete"):
        latest_windows(
            {"KO": closes["KO"].where(closes["KO"].index != closes["KO"].index[5])},
            config,
            scaler,
            market,
        )
