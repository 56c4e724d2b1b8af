"""Indicator values cross-checked on real data against TA-Lib and independent formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from features import indicators
from features.bars import ticker_frame

WARMUP = 100  # recursive indicators converge after their warm-up; compare after it


def _run(frame: pd.DataFrame, name: str) -> dict[str, pd.Series]:
    result = indicators.compute(frame, indicators.parse(name))
    assert result.reason is None, result.reason
    assert result.outputs is not None
    return result.outputs


def _wilder(values: pd.Series, length: int) -> pd.Series:
    """Wilder's smoothing: seed with the simple mean, then RMA (an independent implementation)."""
    out = np.full(len(values), np.nan)
    arr = values.to_numpy()
    first = np.argmax(~np.isnan(arr))
    out[first + length - 1] = arr[first : first + length].mean()
    for i in range(first + length, len(arr)):
        out[i] = (out[i - 1] * (length - 1) + arr[i]) / length
    return pd.Series(out, index=values.index)


def test_catalogue_has_40_plus_indicators_across_five_families() -> None:
    families = {c.category for c in indicators.CATALOGUE.values()}
    assert len(indicators.CATALOGUE) >= 40
    assert {"overlap", "momentum", "trend", "volatility", "volume"} <= families
    for name in indicators.CATALOGUE:
        assert indicators.parse(name).function == name


def test_rsi_matches_talib_and_wilder_formula(goog: pd.DataFrame) -> None:
    rsi = _run(goog, "rsi_14")["value"]
    reference = talib.RSI(goog["close"].to_numpy(), 14)
    np.testing.assert_allclose(rsi.to_numpy()[WARMUP:], reference[WARMUP:], rtol=1e-6)
    delta = goog["close"].diff()
    gain, loss = _wilder(delta.clip(lower=0), 14), _wilder((-delta).clip(lower=0), 14)
    independent = 100 - 100 / (1 + gain / loss)
    np.testing.assert_allclose(rsi.iloc[WARMUP:], independent.iloc[WARMUP:], rtol=1e-6)


def test_macd_matches_talib_and_ema_formula(goog: pd.DataFrame) -> None:
    out = _run(goog, "macd_12_26_9")
    macd, signal, hist = talib.MACD(goog["close"].to_numpy(), 12, 26, 9)
    np.testing.assert_allclose(out["macd"].to_numpy()[WARMUP:], macd[WARMUP:], rtol=1e-6)
    np.testing.assert_allclose(out["macds"].to_numpy()[WARMUP:], signal[WARMUP:], rtol=1e-6)
    np.testing.assert_allclose(out["macdh"].to_numpy()[WARMUP:], hist[WARMUP:], atol=1e-6)
    close = goog["close"]
    ema = lambda s, n: s.ewm(span=n, adjust=False).mean()  # noqa: E731
    independent = ema(close, 12) - ema(close, 26)
    # different seeding (SMA vs first value) fades out; compare well after warm-up
    np.testing.assert_allclose(out["macd"].iloc[300:], independent.iloc[300:], rtol=1e-4, atol=1e-4)


def test_bollinger_bands_match_rolling_mean_and_population_std(goog: pd.DataFrame) -> None:
    out = _run(goog, "bbands_20_2")
    mid = goog["close"].rolling(20).mean()
    std = goog["close"].rolling(20).std(ddof=0)
    np.testing.assert_allclose(out["bbm"].iloc[19:], mid.iloc[19:], rtol=1e-9)
    np.testing.assert_allclose(out["bbu"].iloc[19:], (mid + 2 * std).iloc[19:], rtol=1e-6)
    np.testing.assert_allclose(out["bbl"].iloc[19:], (mid - 2 * std).iloc[19:], rtol=1e-6)


def test_atr_matches_talib_and_true_range_formula(goog: pd.DataFrame) -> None:
    atr = _run(goog, "atr_14")["value"]
    reference = talib.ATR(goog["high"], goog["low"], goog["close"], 14)
    np.testing.assert_allclose(atr.iloc[WARMUP:], reference.iloc[WARMUP:], rtol=1e-6)
    prev = goog["close"].shift()
    tr = pd.concat(
        [goog["high"] - goog["low"], (goog["high"] - prev).abs(), (goog["low"] - prev).abs()],
        axis=1,
    ).max(axis=1)
    independent = _wilder(tr.iloc[1:], 14)
    np.testing.assert_allclose(atr.iloc[WARMUP:], independent.iloc[WARMUP - 1 :], rtol=1e-6)


def test_obv_is_signed_cumulative_volume(goog: pd.DataFrame) -> None:
    obv = _run(goog, "obv")["value"]
    direction = np.sign(goog["close"].diff()).fillna(0)
    independent = (direction * goog["volume"]).cumsum()
    # OBV's origin is a convention (first volume or 0): compare day-to-day changes
    np.testing.assert_allclose(obv.diff().iloc[1:], independent.diff().iloc[1:], rtol=1e-9)
    np.testing.assert_allclose(obv.to_numpy(), talib.OBV(goog["close"], goog["volume"]), rtol=1e-9)


def test_every_curated_indicator_computes_on_real_ohlcv(goog: pd.DataFrame) -> None:
    for name in indicators.CATALOGUE:
        outputs = _run(goog, name)
        assert all(len(s) == len(goog) for s in outputs.values()), name
        assert any(s.iloc[-50:].notna().any() for s in outputs.values()), name


def test_close_only_series_gets_reason_not_values(bundled_bars: pd.DataFrame) -> None:
    aapl = ticker_frame(bundled_bars, "AAPL")
    atr = indicators.compute(aapl, indicators.parse("atr_14"))
    assert atr.outputs is None
    assert atr.reason is not None and "requires OHLC" in atr.reason
    obv = indicators.compute(aapl, indicators.parse("obv"))
    assert obv.reason is not None and "requires volume" in obv.reason
    assert indicators.compute(aapl, indicators.parse("rsi_14")).outputs is not None


def test_any_pandas_ta_indicator_by_name_with_parameters(goog: pd.DataFrame) -> None:
    call = indicators.parse("zscore_30")
    assert call.function == "zscore" and call.kwargs == {"length": 30}
    z = _run(goog, "zscore_30")["value"]
    close = goog["close"]
    expected = (close - close.rolling(30).mean()) / close.rolling(30).std(ddof=0)
    np.testing.assert_allclose(z.iloc[29:], expected.iloc[29:], rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rsix_14", "unknown indicator"),
        ("rsi_0", "whole number"),
        ("rsi_14_2", "at most 1"),
        ("bbands_20_-2", "not of the form"),
        ("rsi;drop", "not of the form"),
        ("bbands_20_5000", "(0, 1000"),
    ],
)
def test_bad_names_and_parameters_say_what_to_fix(name: str, message: str) -> None:
    with pytest.raises(indicators.IndicatorError, match=message.replace("(", r"\(")):
        indicators.parse(name)
