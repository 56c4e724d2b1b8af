"""Technical indicators through pandas-ta, addressed by names such as `rsi_14` or `macd_12_26_9`.

A name is a pandas-ta function followed by its numeric parameters in order. The curated
catalogue below gives friendly defaults and parameter order for the common indicators; any other
pandas-ta indicator works by name too, its numeric parameters taken in signature order. What an
indicator needs (high/low/volume) is read from pandas-ta's own signature, so a close-only series
gets a clear reason instead of invented values.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pandas as pd
import pandas_ta as ta

from features.bars import available_columns

_SERIES_ARGS = {"open_": "open", "high": "high", "low": "low", "close": "close", "volume": "volume"}
_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z][a-z0-9]*)*(_\d+(\.\d+)?)*$")
MAX_INT_PARAM = 5000
MAX_FLOAT_PARAM = 1000.0


class IndicatorError(ValueError):
    """A request for an indicator that cannot be honoured; the message says what to fix."""


@dataclass(frozen=True)
class Curated:
    category: str
    params: tuple[str, ...] = ()
    defaults: tuple[float, ...] = ()
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    about: str = ""


_STD = {"std": ("lower_std", "upper_std")}
# Curated indicators (58) across the five families the product documents.
CATALOGUE: dict[str, Curated] = {
    # overlap (moving averages and price channels)
    "sma": Curated("overlap", ("length",), (20,), about="simple moving average"),
    "ema": Curated("overlap", ("length",), (20,), about="exponential moving average"),
    "wma": Curated("overlap", ("length",), (20,), about="weighted moving average"),
    "dema": Curated("overlap", ("length",), (20,), about="double EMA"),
    "tema": Curated("overlap", ("length",), (20,), about="triple EMA"),
    "hma": Curated("overlap", ("length",), (20,), about="Hull moving average"),
    "kama": Curated(
        "overlap", ("length", "fast", "slow"), (10, 2, 30), about="Kaufman adaptive MA"
    ),
    "t3": Curated("overlap", ("length", "a"), (10, 0.7), about="Tillson T3"),
    "trima": Curated("overlap", ("length",), (20,), about="triangular moving average"),
    "zlma": Curated("overlap", ("length",), (20,), about="zero-lag moving average"),
    "vwma": Curated("overlap", ("length",), (20,), about="volume-weighted moving average"),
    "vwap": Curated("overlap", fixed={"anchor": "W"}, about="VWAP anchored weekly"),
    "midpoint": Curated("overlap", ("length",), (14,), about="midpoint of close range"),
    "midprice": Curated("overlap", ("length",), (14,), about="midpoint of high/low range"),
    "supertrend": Curated("overlap", ("length", "multiplier"), (7, 3.0), about="Supertrend"),
    # momentum
    "rsi": Curated("momentum", ("length",), (14,), about="relative strength index"),
    "macd": Curated("momentum", ("fast", "slow", "signal"), (12, 26, 9), about="MACD"),
    "stoch": Curated("momentum", ("k", "d", "smooth_k"), (14, 3, 3), about="stochastic oscillator"),
    "stochrsi": Curated("momentum", ("length", "rsi_length", "k", "d"), (14, 14, 3, 3)),
    "willr": Curated("momentum", ("length",), (14,), about="Williams %R"),
    "cci": Curated("momentum", ("length",), (20,), about="commodity channel index"),
    "roc": Curated("momentum", ("length",), (10,), about="rate of change"),
    "mom": Curated("momentum", ("length",), (10,), about="momentum"),
    "ao": Curated("momentum", ("fast", "slow"), (5, 34), about="awesome oscillator"),
    "apo": Curated("momentum", ("fast", "slow"), (12, 26), about="absolute price oscillator"),
    "ppo": Curated("momentum", ("fast", "slow", "signal"), (12, 26, 9)),
    "trix": Curated("momentum", ("length", "signal"), (18, 9), about="triple-smoothed EMA ROC"),
    "tsi": Curated("momentum", ("fast", "slow", "signal"), (13, 25, 13), about="true strength"),
    "uo": Curated("momentum", ("fast", "medium", "slow"), (7, 14, 28), about="ultimate oscillator"),
    "cmo": Curated("momentum", ("length",), (14,), about="Chande momentum oscillator"),
    "bop": Curated("momentum", about="balance of power"),
    "coppock": Curated("momentum", ("length", "fast", "slow"), (10, 11, 14), about="Coppock curve"),
    "fisher": Curated("momentum", ("length", "signal"), (9, 1), about="Fisher transform"),
    # trend
    "adx": Curated("trend", ("length",), (14,), about="average directional index"),
    "aroon": Curated("trend", ("length",), (25,), about="Aroon up/down/oscillator"),
    "psar": Curated("trend", ("af0", "af", "max_af"), (0.02, 0.02, 0.2), about="parabolic SAR"),
    "vortex": Curated("trend", ("length",), (14,), about="vortex indicator"),
    "chop": Curated("trend", ("length",), (14,), about="choppiness index"),
    "dpo": Curated(
        "trend",
        ("length",),
        (20,),
        fixed={"centered": False},
        about="detrended price oscillator (not centred: no look-ahead)",
    ),
    "qstick": Curated("trend", ("length",), (10,), about="Q stick"),
    "vhf": Curated("trend", ("length",), (28,), about="vertical horizontal filter"),
    # volatility
    "atr": Curated("volatility", ("length",), (14,), about="average true range"),
    "natr": Curated("volatility", ("length",), (14,), about="normalised ATR (%)"),
    "bbands": Curated(
        "volatility", ("length", "std"), (20, 2.0), aliases=_STD, about="Bollinger Bands"
    ),
    "kc": Curated("volatility", ("length", "scalar"), (20, 2.0), about="Keltner channels"),
    "donchian": Curated("volatility", ("lower_length", "upper_length"), (20, 20)),
    "massi": Curated("volatility", ("fast", "slow"), (9, 25), about="mass index"),
    "true_range": Curated("volatility", about="true range"),
    "ui": Curated("volatility", ("length",), (14,), about="ulcer index"),
    # volume
    "obv": Curated("volume", about="on-balance volume"),
    "mfi": Curated("volume", ("length",), (14,), about="money flow index"),
    "ad": Curated("volume", about="accumulation/distribution line"),
    "adosc": Curated("volume", ("fast", "slow"), (3, 10), about="Chaikin A/D oscillator"),
    "cmf": Curated("volume", ("length",), (20,), about="Chaikin money flow"),
    "efi": Curated("volume", ("length",), (13,), about="Elder force index"),
    "eom": Curated("volume", ("length",), (14,), about="ease of movement"),
    "pvt": Curated("volume", about="price-volume trend"),
    "kvo": Curated("volume", ("fast", "slow", "signal"), (34, 55, 13), about="Klinger oscillator"),
}


@dataclass(frozen=True)
class IndicatorCall:
    """A parsed, validated indicator request, ready to run."""

    name: str
    function: str
    kwargs: dict[str, float]
    requires: frozenset[str]
    fixed: dict[str, Any]


@dataclass(frozen=True)
class IndicatorResult:
    name: str
    function: str
    outputs: dict[str, pd.Series] | None
    reason: str | None = None


@cache
def pandas_ta_indicators() -> frozenset[str]:
    """Every pandas-ta indicator function (candlestick helpers excluded: see features.patterns)."""
    return frozenset(
        name for category, names in ta.Category.items() if category != "candle" for name in names
    )


def _signature(function: str) -> tuple[frozenset[str], dict[str, type]]:
    """(required OHLCV columns, numeric parameters in signature order) of a pandas-ta function."""
    required: set[str] = set()
    numeric: dict[str, type] = {}
    for pname, param in inspect.signature(getattr(ta, function)).parameters.items():
        if pname in _SERIES_ARGS:
            if param.default is inspect.Parameter.empty:
                required.add(_SERIES_ARGS[pname])
            continue
        if pname == "offset":  # shifting output forward/back would break the no-look-ahead rule
            continue
        note = str(param.annotation)
        if "float" in note:
            numeric[pname] = float
        elif "int" in note:
            numeric[pname] = int
    return frozenset(required), numeric


def _coerce(function: str, pname: str, kind: type, raw: str) -> float:
    value = float(raw)
    if kind is int:
        if not value.is_integer() or not 1 <= value <= MAX_INT_PARAM:
            raise IndicatorError(
                f"{function}: parameter {pname} must be a whole number "
                f"1..{MAX_INT_PARAM}, got {raw}"
            )
        return int(value)
    if not 0 < value <= MAX_FLOAT_PARAM or math.isnan(value):
        raise IndicatorError(f"{function}: parameter {pname} must be in (0, {MAX_FLOAT_PARAM}]")
    return value


def _split(name: str) -> tuple[str, list[str]]:
    """`macd_12_26_9` -> ("macd", ["12", "26", "9"]); `true_range` -> ("true_range", [])."""
    tokens = name.split("_")
    first_number = next((i for i, t in enumerate(tokens) if t[:1].isdigit()), len(tokens))
    return "_".join(tokens[:first_number]), tokens[first_number:]


def parse(name: str) -> IndicatorCall:
    """Validate an indicator name and its parameters; raise IndicatorError saying what to fix."""
    clean = name.strip().lower()
    if not _NAME.match(clean):
        raise IndicatorError(
            f"indicator {name!r} is not of the form name_param_param (e.g. rsi_14, bbands_20_2)"
        )
    function, args = _split(clean)
    if function not in pandas_ta_indicators() or not hasattr(ta, function):
        known = sorted(set(CATALOGUE) | pandas_ta_indicators())
        hint = difflib.get_close_matches(function, known, n=3)
        suggestion = f"; did you mean {', '.join(hint)}?" if hint else ""
        raise IndicatorError(f"unknown indicator {function!r}{suggestion}")
    required, numeric = _signature(function)
    curated = CATALOGUE.get(function)
    order = list(curated.params) if curated else list(numeric)
    if len(args) > len(order):
        raise IndicatorError(
            f"{function} takes at most {len(order)} parameter(s) ({', '.join(order) or 'none'}),"
            f" got {len(args)}"
        )
    values: dict[str, float] = {}
    for i, pname in enumerate(order):
        targets = curated.aliases.get(pname, (pname,)) if curated else (pname,)
        kind = numeric.get(targets[0], float)
        if i < len(args):
            value = _coerce(function, pname, kind, args[i])
        elif curated and i < len(curated.defaults):
            value = curated.defaults[i]
        else:
            continue
        values.update(dict.fromkeys(targets, value))
    fixed = curated.fixed if curated else {}
    return IndicatorCall(clean, function, values, required, fixed)


def _outputs(raw: Any, index: pd.Index) -> dict[str, pd.Series]:
    """Name each output column by its pandas-ta prefix: MACDh_12_26_9 -> macdh."""
    if raw is None:
        return {}
    if isinstance(raw, tuple):  # e.g. ichimoku: (current lines, forward span); keep the present
        raw = raw[0]
    if isinstance(raw, pd.Series):
        return {"value": raw.reindex(index)}
    outputs: dict[str, pd.Series] = {}
    for column in raw.columns:
        key = str(column).split("_")[0].lower()
        outputs[key if key not in outputs else str(column).lower()] = raw[column].reindex(index)
    return outputs


def missing_reason(requires: frozenset[str], frame: pd.DataFrame) -> str | None:
    """Why a series cannot feed this computation, or None when it can."""
    missing = requires - available_columns(frame)
    if not missing:
        return None
    needs_ohlc = missing & {"open", "high", "low"}
    parts = []
    if needs_ohlc:
        parts.append(f"requires OHLC ({', '.join(sorted(needs_ohlc))})")
    if "volume" in missing:
        parts.append("requires volume")
    return " and ".join(parts) + "; this series has no such data in the requested range"


def compute(frame: pd.DataFrame, call: IndicatorCall) -> IndicatorResult:
    """Run one indicator over a date-indexed OHLCV frame (values at t use bars up to t only)."""
    reason = missing_reason(call.requires, frame)
    if reason:
        return IndicatorResult(call.name, call.function, None, reason)
    series = {arg: frame[col] for arg, col in _SERIES_ARGS.items() if col in call.requires}
    function = getattr(ta, call.function)
    try:
        # pandas-ta delegates to TA-Lib where it has the indicator (its native CCI, for one,
        # is wrong in 0.4.x); the rest are pandas-ta's own code.
        raw = function(**series, **call.kwargs, **call.fixed)
    except (ValueError, TypeError, ZeroDivisionError, IndexError) as exc:
        return IndicatorResult(
            call.name, call.function, None, f"{call.function} failed on this series: {exc}"
        )
    outputs = _outputs(raw, frame.index)
    if not outputs:
        return IndicatorResult(
            call.name, call.function, None, "not enough bars for these parameters"
        )
    return IndicatorResult(call.name, call.function, outputs)


def category(function: str) -> str | None:
    """The family an indicator belongs to (curated first, then pandas-ta's own grouping)."""
    curated = CATALOGUE.get(function)
    if curated:
        return curated.category
    return next((c for c, names in ta.Category.items() if function in names), None)
