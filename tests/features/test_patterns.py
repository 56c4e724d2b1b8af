"""Candlestick patterns: every TA-Lib CDL function, per bar, with direction."""

from __future__ import annotations

import pandas as pd
import pytest
import talib

from features import patterns
from features.bars import ticker_frame


def test_all_talib_candlestick_functions_are_exposed() -> None:
    functions = patterns.pattern_functions()
    assert len(functions) >= 61
    assert functions["hammer"] == "CDLHAMMER"
    assert set(functions.values()) == set(talib.get_function_groups()["Pattern Recognition"])


def test_matrix_has_one_signed_column_per_pattern_and_one_row_per_bar(goog: pd.DataFrame) -> None:
    matrix = patterns.pattern_matrix(goog)
    assert matrix.shape == (len(goog), len(patterns.pattern_functions()))
    assert matrix.index.equals(goog.index)
    assert set(pd.unique(matrix.to_numpy().ravel())) <= {-200, -100, -80, 0, 80, 100, 200}
    expected = talib.CDLENGULFING(goog["open"], goog["high"], goog["low"], goog["close"])
    assert (matrix["engulfing"].to_numpy() == expected.to_numpy()).all()


def test_detect_returns_dated_hits_with_direction(goog: pd.DataFrame) -> None:
    hits, reason = patterns.detect(goog.loc["2012"], ["engulfing", "doji"])
    assert reason is None and hits
    assert {h.pattern for h in hits} <= {"engulfing", "doji"}
    assert all(h.direction in {"bullish", "bearish"} and h.strength in {80, 100, 200} for h in hits)
    engulfing = {h.date for h in hits if h.pattern == "engulfing"}
    raw = talib.CDLENGULFING(*(goog.loc["2012", c] for c in ("open", "high", "low", "close")))
    assert engulfing == set(raw[raw != 0].index)


def test_close_only_series_says_it_needs_ohlc(bundled_bars: pd.DataFrame) -> None:
    hits, reason = patterns.detect(ticker_frame(bundled_bars, "KO"))
    assert hits == []
    assert reason is not None and "requires OHLC" in reason


def test_unknown_pattern_names_are_refused() -> None:
    assert patterns.validate_names(["CDLHAMMER", " doji "]) == ["hammer", "doji"]
    with pytest.raises(ValueError, match="unknown pattern"):
        patterns.validate_names(["teacup"])
