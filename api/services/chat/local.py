"""The local responder: answers without a language model, so chat works offline.

It picks tools from the tickers (written in capitals, or with a `$`) and keywords in the
question, runs them with the caller's permissions like a model's tool calls, and fills fixed
templates with their results. Only our own words and the data's numbers, dates, tickers and
enumerated readings reach the answer; free text found in market data (instrument names, notes)
never does, so an instruction hidden in data has nowhere to go.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import asyncpg

from api.db.market import InstrumentRepository
from api.services.chat.tools import ChatTools, ToolResult

MAX_TICKERS = 3
_TICKER = re.compile(r"(?<![\w$])\$?([A-Z][A-Z0-9.\-]{0,14})(?![\w])")
_INTENTS: dict[str, tuple[str, ...]] = {
    "prediction": ("predict", "forecast", "outlook", "expect", "future", "will ", "target"),
    "indicators": ("rsi", "macd", "indicator", "moving average", "sma", "ema", "bollinger"),
    "patterns": ("pattern", "candle", "doji", "engulfing", "hammer"),
    "history_summary": ("history", "trend", "perform", "momentum", "volatil", "summary", "been"),
}
_PERIODS = (("today", "1d"), ("week", "1w"), ("ytd", "ytd"), ("year to date", "ytd"))
_PERIODS += (("month", "1m"), ("year", "1y"))
HELP = (
    "I am answering from Stock Copilot's own data tools right now, without a language model. "
    "Mention a ticker in capitals (for example AAPL) and ask for its quote, history, "
    "indicators such as RSI or MACD, candlestick patterns or a forecast; or ask about your "
    "portfolio or how the sectors performed."
)


def _price(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):,.2f}"


def _pct(value: Any, signed: bool = True) -> str:
    if value is None:
        return "n/a"
    return f"{float(value) * 100:+.2f}%" if signed else f"{float(value) * 100:.1f}%"


class LocalResponder:
    def __init__(self, pool: asyncpg.Pool, tools: ChatTools) -> None:
        self._pool = pool
        self._tools = tools

    async def _tickers(self, question: str) -> list[str]:
        candidates = list(dict.fromkeys(_TICKER.findall(question)))
        if not candidates:
            return []
        unknown = set(await InstrumentRepository(self._pool).unknown(candidates))
        return [t for t in candidates if t not in unknown][:MAX_TICKERS]

    def _plan(self, question: str, tickers: list[str]) -> list[tuple[str, dict[str, Any]]]:
        text = question.lower()
        allowed = {s.name for s in self._tools.allowed()}
        calls: list[tuple[str, dict[str, Any]]] = []
        if "portfolio" in text or "holding" in text or "position" in text:
            calls.append(("portfolio_summary", {}))
        if "sector" in text or "industr" in text:
            period = next((p for word, p in _PERIODS if word in text), "1m")
            calls.append(("sector_performance", {"period": period}))
        for ticker in tickers:
            wanted = [name for name, words in _INTENTS.items() if any(w in text for w in words)]
            for name in wanted or ["quote"]:
                arguments: dict[str, Any] = {"ticker": ticker}
                if name == "prediction":
                    arguments["horizon"] = 1 if "tomorrow" in text else 20 if "month" in text else 5
                calls.append((name, arguments))
        return [(name, arguments) for name, arguments in calls if name in allowed]

    async def answer(self, question: str) -> tuple[str, list[ToolResult]]:
        calls = self._plan(question, await self._tickers(question))
        if not calls:
            return HELP, []
        results = [await self._tools.run(name, arguments) for name, arguments in calls]
        return "\n\n".join(render(r) for r in results), results


def render(result: ToolResult) -> str:
    data = result.data
    subject = result.arguments.get("ticker", "")
    if not result.ok:
        what = result.name.replace("_", " ")
        return f"I could not get the {what}{' for ' + subject if subject else ''}: {data['detail']}"
    return _TEMPLATES[result.name](data)


def _quote(d: dict[str, Any]) -> str:
    text = f"{d['ticker']} closed at {_price(d['close'])} on {d['date']}"
    if d["previous_close"] is not None:
        text += (
            f", {_pct(d['change_pct'])} ({float(d['change']):+,.2f}) on the previous close of "
            f"{_price(d['previous_close'])}"
        )
    return text + f". 52-week range: {_price(d['week52_low'])} to {_price(d['week52_high'])}."


def _history(d: dict[str, Any]) -> str:
    readings = ", ".join(f"{name} {r['signal']}" for name, r in d["readings"].items())
    volatility = d["annualised_volatility"]
    return (
        f"From {d['start']} to {d['end']} {d['ticker']} went from {_price(d['first_close'])} to "
        f"{_price(d['last_close'])} ({_pct(d['return'])}); highest close "
        f"{_price(d['highest_close'])}, lowest {_price(d['lowest_close'])}, annualised volatility "
        f"{_pct(volatility, signed=False)}. Readings: {readings}."
    )


def _indicators(d: dict[str, Any]) -> str:
    parts = []
    for name, outputs in d.items():
        if name in ("ticker", "date"):
            continue
        if "reason" in outputs:
            parts.append(f"{name} unavailable ({outputs['reason']})")
            continue
        values = [f"{k} {_price(v)}" for k, v in outputs.items() if k != "category"]
        parts.append(f"{name}: {', '.join(values)}")
    return f"{d['ticker']} indicators on {d['date']}: " + "; ".join(parts) + "."


def _patterns(d: dict[str, Any]) -> str:
    if d["reason"]:
        return f"{d['ticker']}: no candlestick patterns ({d['reason']})."
    hits = d["hits"]
    if not hits:
        return f"{d['ticker']}: no candlestick patterns between {d['start']} and {d['end']}."
    last = hits[-1]
    return (
        f"{d['ticker']}: {len(hits)} candlestick pattern(s) between {d['start']} and {d['end']}; "
        f"the latest is {last['pattern']} ({last['direction']}) on {last['date']}."
    )


def _prediction(d: dict[str, Any]) -> str:
    if not d["available"]:
        return f"No forecast: {d['reason']}."
    q, card = d["price_quantiles"], d["model_card"]
    text = (
        f"The {card['family']} model (version {card['version']}, {card['variant']}) forecasts "
        f"{d['ticker']} {d['horizon_trading_days']} trading days after {d['as_of']} (last close "
        f"{_price(d['last_close'])}): median {_price(q['p50'])}, 80% range {_price(q['p10'])} to "
        f"{_price(q['p90'])}, probability of going up {_pct(d['prob_up'], signed=False)}."
    )
    skill = card["skill_at_this_horizon"]
    if skill:
        text += (
            f" Its measured skill against a random walk at this horizon is "
            f"{skill['skill_vs_rw']:+.4f} ({skill['verdict']})."
        )
    return text


def _portfolios(d: dict[str, Any]) -> str:
    if not d["portfolios"]:
        return "You have no portfolios yet."
    lines = []
    for p in d["portfolios"]:
        top = sorted(p["positions"], key=lambda v: -(v["weight"] or 0))[:3]
        held = ", ".join(f"{v['ticker']} {_pct(v['weight'], signed=False)}" for v in top)
        lines.append(
            f"{p['name']}: value {_price(p['market_value'])} {p['currency']} including "
            f"{_price(p['cash'])} cash; unrealised P&L {_price(p['unrealised_pnl'])}, realised "
            f"{_price(p['realised_pnl'])}" + (f"; largest positions {held}." if held else ".")
        )
    return "\n".join(lines)


def _sectors(d: dict[str, Any]) -> str:
    ranked = sorted(d["sectors"], key=lambda s: -s["return"])
    best = ", ".join(f"{s['sector']} {_pct(s['return'])}" for s in ranked[:3])
    worst = ", ".join(f"{s['sector']} {_pct(s['return'])}" for s in ranked[-2:])
    return (
        f"Sector returns from {d['start']} to {d['end']} (S&P 500 {_pct(d['benchmark_return'])}): "
        f"best {best}; weakest {worst}."
    )


_TEMPLATES: dict[str, Callable[[dict[str, Any]], str]] = {
    "quote": _quote,
    "history_summary": _history,
    "indicators": _indicators,
    "patterns": _patterns,
    "prediction": _prediction,
    "portfolio_summary": _portfolios,
    "sector_performance": _sectors,
}
