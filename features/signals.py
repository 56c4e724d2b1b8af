"""Technical read-outs of one ticker's bars: a signal summary and support/resistance levels.

Every verdict carries the indicator values that produced it, so the frontend can show why. The
rules are conventional readings (price against its 50- and 200-day averages, RSI 30/70, MACD
histogram sign, ATR against its own year, OBV direction) — descriptions of the recent past, not
forecasts; the model forecasts live under /predictions with their measured skill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import talib

MIN_BARS = 60


@dataclass(frozen=True)
class Verdict:
    signal: str  # bullish | bearish | neutral | high | normal | low | unavailable ...
    values: dict[str, float | None]
    reason: str


def _last(values: np.ndarray | pd.Series) -> float | None:
    value = float(np.asarray(values)[-1])
    return value if math.isfinite(value) else None


def _has(frame: pd.DataFrame, *columns: str) -> bool:
    recent = frame.iloc[-MIN_BARS:]
    return all(c in recent and recent[c].notna().all() for c in columns)


def trend(frame: pd.DataFrame) -> Verdict:
    close = frame["close"].to_numpy(np.float64)
    sma50, sma200 = _last(talib.SMA(close, 50)), _last(talib.SMA(close, 200))
    price = float(close[-1])
    values = {"close": price, "sma_50": sma50, "sma_200": sma200}
    if _has(frame, "high", "low"):
        values["adx_14"] = _last(
            talib.ADX(
                frame["high"].to_numpy(np.float64), frame["low"].to_numpy(np.float64), close, 14
            )
        )
    if sma50 is None or sma200 is None:
        return Verdict("unavailable", values, "needs 200 bars for the long average")
    if price > sma50 > sma200:
        signal, reason = "bullish", "price above a rising structure (close > SMA50 > SMA200)"
    elif price < sma50 < sma200:
        signal, reason = "bearish", "price below a falling structure (close < SMA50 < SMA200)"
    else:
        signal, reason = "neutral", "averages and price disagree"
    adx = values.get("adx_14")
    if adx is not None and adx < 20 and signal != "neutral":
        reason += f"; weak trend strength (ADX {adx:.0f} < 20)"
    return Verdict(signal, values, reason)


def momentum(frame: pd.DataFrame) -> Verdict:
    close = frame["close"].to_numpy(np.float64)
    rsi = _last(talib.RSI(close, 14))
    _, _, hist = talib.MACD(close, 12, 26, 9)
    macd_hist = _last(hist)
    roc = _last(talib.ROC(close, 20))
    values = {"rsi_14": rsi, "macd_hist": macd_hist, "roc_20": roc}
    if rsi is None or macd_hist is None:
        return Verdict("unavailable", values, "too little history")
    if rsi >= 70:
        return Verdict("overbought", values, f"RSI {rsi:.0f} ≥ 70")
    if rsi <= 30:
        return Verdict("oversold", values, f"RSI {rsi:.0f} ≤ 30")
    if rsi > 50 and macd_hist > 0:
        return Verdict("bullish", values, "RSI above 50 and MACD histogram positive")
    if rsi < 50 and macd_hist < 0:
        return Verdict("bearish", values, "RSI below 50 and MACD histogram negative")
    return Verdict("neutral", values, "RSI and MACD disagree")


def volatility(frame: pd.DataFrame) -> Verdict:
    close = frame["close"].to_numpy(np.float64)
    if _has(frame, "high", "low"):
        atr = talib.ATR(
            frame["high"].to_numpy(np.float64), frame["low"].to_numpy(np.float64), close, 14
        )
        series = pd.Series(atr / close, index=frame.index)
        name = "atr_14_pct"
    else:  # close-only series: realised volatility of daily log returns instead
        series = np.log(frame["close"]).diff().rolling(20).std() * math.sqrt(252)
        name = "realised_vol_20"
    year = series.iloc[-252:].dropna()
    current = _last(series.to_numpy())
    upper, lower, middle = talib.BBANDS(close, 20, 2, 2)
    width = _last((upper - lower) / middle)
    values = {
        name: current,
        f"{name}_1y_median": float(year.median()) if len(year) else None,
        "bollinger_width": width,
    }
    if current is None or len(year) < 60:
        return Verdict("unavailable", values, "too little history")
    pct = float((year < current).mean())
    values["percentile_1y"] = pct
    if pct >= 0.8:
        return Verdict("high", values, f"{name} in the top fifth of its year")
    if pct <= 0.2:
        return Verdict("low", values, f"{name} in the bottom fifth of its year")
    return Verdict("normal", values, f"{name} near its usual level")


def volume(frame: pd.DataFrame) -> Verdict:
    if not _has(frame, "volume"):
        return Verdict("unavailable", {}, "no volume data for this series")
    close = frame["close"].to_numpy(np.float64)
    vol = frame["volume"].to_numpy(np.float64)
    obv = talib.OBV(close, vol)
    ratio = float(vol[-1] / np.mean(vol[-20:])) if np.mean(vol[-20:]) > 0 else None
    obv_change = float(obv[-1] - obv[-21]) if len(obv) > 21 else None
    price_change = float(close[-1] / close[-21] - 1) if len(close) > 21 else None
    values = {"obv_change_20": obv_change, "volume_vs_20d": ratio, "price_change_20": price_change}
    if obv_change is None or price_change is None:
        return Verdict("unavailable", values, "too little history")
    if (obv_change > 0) == (price_change > 0):
        return Verdict("confirming", values, "on-balance volume moves with price over 20 bars")
    return Verdict("diverging", values, "on-balance volume moves against price over 20 bars")


def summary(frame: pd.DataFrame) -> dict[str, Verdict]:
    if len(frame) < MIN_BARS:
        raise ValueError(f"a summary needs at least {MIN_BARS} bars; have {len(frame)}")
    return {
        "trend": trend(frame),
        "momentum": momentum(frame),
        "volatility": volatility(frame),
        "volume": volume(frame),
    }


@dataclass
class Level:
    price: float
    touches: int
    last_touched: pd.Timestamp
    kind: str = ""
    dates: list[pd.Timestamp] = field(default_factory=list)


def pivots(series: pd.Series, span: int, highs: bool) -> pd.Series:
    """Swing points: a bar that is the extreme of the `span` bars on each side of it."""
    window = 2 * span + 1
    rolled = series.rolling(window, center=True)
    extreme = rolled.max() if highs else rolled.min()
    return series[(series == extreme) & extreme.notna()]


def support_resistance(
    frame: pd.DataFrame, lookback: int = 250, span: int = 5, tolerance: float = 0.015
) -> dict[str, Any]:
    """Levels where swing highs and lows cluster (within `tolerance` of each other), split into
    support below the last close and resistance above, nearest first."""
    recent = frame.iloc[-lookback:]
    high = recent["high"].fillna(recent["close"]) if "high" in recent else recent["close"]
    low = recent["low"].fillna(recent["close"]) if "low" in recent else recent["close"]
    points = pd.concat([pivots(high, span, True), pivots(low, span, False)]).sort_values()
    levels: list[Level] = []
    for when, price in points.items():
        if levels and price <= levels[-1].price * (1 + tolerance):
            level = levels[-1]
            level.dates.append(when)
            level.price = float(np.mean([level.price] * (len(level.dates) - 1) + [price]))
            level.touches += 1
            level.last_touched = max(level.last_touched, when)
        else:
            levels.append(Level(float(price), 1, when, dates=[when]))
    last = float(recent["close"].iloc[-1])

    def out(level: Level) -> dict[str, Any]:
        return {
            "price": round(level.price, 6),
            "touches": level.touches,
            "last_touched": level.last_touched.date(),
            "distance_pct": level.price / last - 1,
        }

    support = sorted((lv for lv in levels if lv.price < last), key=lambda lv: -lv.price)
    resistance = sorted((lv for lv in levels if lv.price >= last), key=lambda lv: lv.price)
    return {
        "last_close": last,
        "support": [out(lv) for lv in support],
        "resistance": [out(lv) for lv in resistance],
    }
