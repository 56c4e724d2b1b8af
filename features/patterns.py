"""Candlestick patterns: every TA-Lib `CDL*` function, per bar, with direction."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
import talib

from features.indicators import missing_reason

_REQUIRES = frozenset({"open", "high", "low", "close"})


@dataclass(frozen=True)
class PatternHit:
    date: pd.Timestamp
    pattern: str
    direction: str  # "bullish" | "bearish"
    strength: int  # TA-Lib magnitude: 100 pattern, 200 confirmed, 80 weak (edges touch)


@cache
def pattern_functions() -> dict[str, str]:
    """`hammer` -> `CDLHAMMER` for every TA-Lib candlestick function (61 in TA-Lib 0.6)."""
    names = talib.get_function_groups()["Pattern Recognition"]
    return {name.removeprefix("CDL").lower(): name for name in names}


def pattern_matrix(frame: pd.DataFrame) -> pd.DataFrame:
    """Signed TA-Lib output (+100/+200 bullish, -100/-200 bearish, 0 none), one column a pattern.

    Each value at bar t depends on bars up to t only. Rows without full OHLC give 0.
    """
    ohlc = frame[["open", "high", "low", "close"]].astype(np.float64)
    complete = ohlc.notna().all(axis=1)
    data = ohlc[complete]
    columns = {
        key: getattr(talib, fn)(data["open"], data["high"], data["low"], data["close"])
        for key, fn in pattern_functions().items()
    }
    matrix = pd.DataFrame(columns, index=data.index).astype(np.int16)
    return matrix.reindex(frame.index, fill_value=0)


def detect(
    frame: pd.DataFrame, names: list[str] | None = None
) -> tuple[list[PatternHit], str | None]:
    """Pattern hits in `frame`, optionally only the named patterns; (hits, reason-if-impossible)."""
    reason = missing_reason(_REQUIRES, frame)
    if reason:
        return [], reason
    matrix = pattern_matrix(frame)
    if names:
        matrix = matrix[names]
    stacked = matrix.stack()
    stacked = stacked[stacked != 0]
    hits = [
        PatternHit(date, pattern, "bullish" if value > 0 else "bearish", abs(int(value)))
        for (date, pattern), value in stacked.items()
    ]
    return hits, None


def validate_names(names: list[str]) -> list[str]:
    """Lower-case pattern names, refusing unknown ones with the list of valid names."""
    known = pattern_functions()
    clean = [n.strip().lower().removeprefix("cdl") for n in names if n.strip()]
    unknown = [n for n in clean if n not in known]
    if unknown:
        raise ValueError(f"unknown pattern(s) {unknown}; valid: {', '.join(sorted(known))}")
    return clean
