"""Live market-data providers behind one interface: yfinance and Tiingo.

Both answer one question, a ticker's daily bars over [start, end], adjusted for every split and
dividend up to now, plus the corporate actions that went ex inside the window, so the feed never
cares which provider spoke. Errors say whether retrying can help (`UnknownSymbol` cannot).

Tiingo is the keyed provider because its official, documented REST API returns split and
dividend factors in the same end-of-day answer as raw and adjusted prices, and a free key tier
covers a small universe. It has no index data, so yfinance serves the benchmark (SPX); its daily
endpoint has finished days only, so today's provisional bar comes from its IEX endpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import httpx
import pandas as pd

from features.bars import BAR_COLUMNS, canonical, normalise_ticker
from features.sessions import market_state, sessions_between

EXCHANGE_TZ = ZoneInfo("America/New_York")
TIINGO_TIMEOUT_S = 10.0
HistoryFetcher = Callable[[str, date, date], pd.DataFrame]

# Our ticker -> the provider's symbol where the class-share rule below does not give it; None:
# the provider does not offer the instrument (Tiingo has no index data).
PROVIDER_SYMBOLS: dict[str, dict[str, str | None]] = {
    "SPX": {"yfinance": "^GSPC", "tiingo": None},
}
# Class shares: ours BRK.B is Yahoo's BRK-B and Tiingo's brk-b.
CLASS_SHARE_SPELLING: dict[str, Callable[[str], str]] = {
    "yfinance": lambda ticker: ticker.replace(".", "-"),
    "tiingo": lambda ticker: ticker.replace(".", "-").lower(),
}
UNOFFERED = {"tiingo": "Tiingo has no index data; yfinance serves the benchmark"}


class ProviderError(RuntimeError):
    """The provider could not deliver bars now (network, server error): worth retrying later."""


class RateLimited(ProviderError):
    """The provider asked us to slow down; `retry_after_s` is its hint, when it gave one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnknownSymbol(ProviderError):
    """The provider does not know or offer the symbol: retrying will not help."""


class MalformedAnswer(ProviderError):
    """The answer is not in the provider's documented format; never guess what it meant."""


@dataclass(frozen=True)
class CorporateAction:
    """A split and/or cash dividend going ex on one day, for OUR ticker."""

    ticker: str
    ex_date: date
    split: float = 1.0  # new shares per old share (3.0 for a 3-for-1)
    dividend: float = 0.0  # cash per share


@dataclass(frozen=True, eq=False)  # eq=False: a DataFrame has no truth value to compare by
class ProviderAnswer:
    """Adjusted canonical bars inside [start, end] and the actions that went ex there."""

    ticker: str
    bars: pd.DataFrame
    actions: tuple[CorporateAction, ...]


class LiveProvider(Protocol):
    """Daily bars for one ticker over [start, end], adjusted as of now, with corporate actions."""

    name: str

    def daily_bars(self, ticker: str, start: date, end: date) -> ProviderAnswer: ...


def provider_symbol(ticker: str, provider: str) -> str:
    """Our (normalised) ticker as `provider` spells it; UnknownSymbol where it is not offered."""
    special = PROVIDER_SYMBOLS.get(ticker, {})
    if provider not in special:
        return CLASS_SHARE_SPELLING[provider](ticker)
    symbol = special[provider]
    if symbol is None:
        raise UnknownSymbol(f"{ticker}: {UNOFFERED.get(provider, f'{provider} does not offer it')}")
    return symbol


def _checked(ticker: str, start: date, end: date) -> str:
    symbol = normalise_ticker(ticker)
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    return symbol


def _new_york_today() -> date:
    return datetime.now(EXCHANGE_TZ).date()


def _bars_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return canonical(pd.DataFrame.from_records(rows, columns=list(BAR_COLUMNS)))


def _answer(
    ticker: str, bars: pd.DataFrame, actions: list[CorporateAction], start: date, end: date
) -> ProviderAnswer:
    """Keep what lies inside [start, end]: providers pad windows (Yahoo's exclusive end)."""
    inside = (bars["date"] >= pd.Timestamp(start)) & (bars["date"] <= pd.Timestamp(end))
    within = sorted((a for a in actions if start <= a.ex_date <= end), key=lambda a: a.ex_date)
    return ProviderAnswer(ticker, bars[inside].reset_index(drop=True), tuple(within))


def _trading_was_due(start: date, end: date, today: date) -> bool:
    """Whether [start, end] holds a finished session, so an empty answer means a missing symbol.
    Today's session does not count: before the open no provider has a bar for it."""
    return bool(sessions_between(start, min(end, today - timedelta(days=1))))


# --- yfinance ---------------------------------------------------------------------------------


def yahoo_history(symbol: str, start: date, end: date) -> pd.DataFrame:
    """The one real call into yfinance: OHLCV adjusted as of now, with the action columns."""
    import yfinance as yf

    return yf.Ticker(symbol).history(
        start=start,
        end=end + timedelta(days=1),  # yfinance's end is exclusive
        interval="1d",
        auto_adjust=True,
        actions=True,
        raise_errors=True,
    )


def yahoo_error(exc: Exception, symbol: str) -> ProviderError:
    """yfinance's many exception types -> ours, by what the caller can do about them."""
    from yfinance import exceptions as yfe

    text = f"yfinance failed for {symbol}: {exc}"
    if isinstance(exc, yfe.YFRateLimitError):
        return RateLimited(text)
    # Yahoo's own words for a symbol it lacks; nothing broader ("host not found" is a network
    # error, and calling it an unknown symbol would stop the retries)
    symbol_gone = ("possibly delisted", "may be delisted", "Quote not found for symbol")
    if isinstance(exc, yfe.YFTickerMissingError) or any(s in str(exc) for s in symbol_gone):
        return UnknownSymbol(text)
    return ProviderError(text)


def _exchange_dates(index: pd.Index) -> pd.DatetimeIndex:
    # Daily bars are stamped at the exchange's midnight: keep the exchange-local calendar date
    return pd.DatetimeIndex(index).tz_localize(None).normalize()


def normalise_yfinance(raw: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """yfinance `history()` frame (tz-aware index, Title-case columns) -> canonical bars.

    Rows Yahoo leaves incomplete (NaN close, a holiday stub) are dropped, never filled.
    """
    needed = {"Open", "High", "Low", "Close", "Volume"}
    if not needed <= set(raw.columns):
        raise MalformedAnswer(f"yfinance answer lacks columns {sorted(needed - set(raw.columns))}")
    frame = raw[sorted(needed)].rename(columns=str.lower)
    frame = frame.assign(date=_exchange_dates(raw.index), ticker=ticker, source="yfinance")
    return canonical(frame.dropna(subset=["close"]).reset_index(drop=True))


def yfinance_actions(raw: pd.DataFrame, ticker: str) -> list[CorporateAction]:
    """Actions from the `Dividends`/`Stock Splits` columns (0 on days without one), read from
    every row: an action is real even where Yahoo's price row is a stub."""
    needed = {"Dividends", "Stock Splits"}
    if not needed <= set(raw.columns):
        raise MalformedAnswer(f"yfinance answer lacks columns {sorted(needed - set(raw.columns))}")
    splits = raw["Stock Splits"].fillna(0.0).astype(float).to_numpy()
    dividends = raw["Dividends"].fillna(0.0).astype(float).to_numpy()
    days = _exchange_dates(raw.index).date
    return [
        CorporateAction(ticker, day, split=split if split > 0 else 1.0, dividend=dividend)
        for day, split, dividend in zip(days, splits, dividends, strict=True)
        if split not in (0.0, 1.0) or dividend != 0.0
    ]


class YFinanceProvider:
    """Yahoo Finance through yfinance. `fetch` is swappable so tests replay recorded answers."""

    name = "yfinance"

    def __init__(
        self, fetch: HistoryFetcher = yahoo_history, today: Callable[[], date] | None = None
    ) -> None:
        self._fetch = fetch
        self._today = today or _new_york_today

    def daily_bars(self, ticker: str, start: date, end: date) -> ProviderAnswer:
        ours = _checked(ticker, start, end)
        symbol = provider_symbol(ours, self.name)
        try:
            raw = self._fetch(symbol, start, end)
        except Exception as exc:  # yfinance raises many types; callers get ours
            if self._empty_window(exc, start, end):
                return _answer(ours, _bars_frame([]), [], start, end)
            raise yahoo_error(exc, symbol) from exc
        if raw is None or raw.empty:
            if _trading_was_due(start, end, self._today()):
                raise UnknownSymbol(f"yfinance returned no bars for {symbol} in {start}..{end}")
            return _answer(ours, _bars_frame([]), [], start, end)
        return _answer(ours, normalise_yfinance(raw, ours), yfinance_actions(raw, ours), start, end)

    def _empty_window(self, exc: Exception, start: date, end: date) -> bool:
        """yfinance says "no price data found" for a window without sessions (a weekend, a
        holiday); only a missing timezone (or no data where sessions were) is a missing symbol."""
        from yfinance import exceptions as yfe

        missing = isinstance(exc, yfe.YFPricesMissingError)
        return missing and not _trading_was_due(start, end, self._today())


# --- Tiingo -----------------------------------------------------------------------------------

DAILY_FIELDS = (
    *("open", "high", "low", "close", "volume"),
    *("adjOpen", "adjHigh", "adjLow", "adjClose", "adjVolume", "divCash", "splitFactor"),
)
NON_NEGATIVE = frozenset({"volume", "adjVolume", "divCash"})  # every other field is > 0


def _number(record: dict[str, Any], field: str) -> float:
    value = record.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        # name the type, never the value: a body's text is no place to copy into our errors
        raise MalformedAnswer(f"Tiingo field {field!r} is not a number ({type(value).__name__})")
    if value < 0 or (value == 0 and field not in NON_NEGATIVE):
        raise MalformedAnswer(f"Tiingo field {field!r} is not positive: {value!r}")
    return float(value)


def _tiingo_date(value: Any) -> date:
    # EOD bars are stamped at midnight UTC *of the exchange date*: the date part is the trading
    # day (converting to New York time would move every bar to the day before)
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise MalformedAnswer("Tiingo date is not ISO 8601") from None


def _list_of_records(body: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(body, list) or not all(isinstance(r, dict) for r in body):
        raise MalformedAnswer(f"Tiingo {what} answer is not a JSON list of objects")
    return body


def tiingo_daily(body: Any, ticker: str) -> tuple[list[dict[str, Any]], list[CorporateAction]]:
    """Tiingo's EOD answer -> bar rows from the adj* fields, actions from divCash/splitFactor."""
    rows: list[dict[str, Any]] = []
    actions: list[CorporateAction] = []
    for record in _list_of_records(body, "daily prices"):
        day = _tiingo_date(record.get("date"))
        v = {field: _number(record, field) for field in DAILY_FIELDS}
        rows.append(
            {"ticker": ticker, "date": day, "open": v["adjOpen"], "high": v["adjHigh"]}
            | {"low": v["adjLow"], "close": v["adjClose"], "volume": v["adjVolume"]}
            | {"source": "tiingo"}
        )
        if v["splitFactor"] != 1.0 or v["divCash"] != 0.0:
            actions.append(CorporateAction(ticker, day, v["splitFactor"], v["divCash"]))
    return rows, actions


def _optional(quote: dict[str, Any], field: str) -> float:
    return math.nan if quote.get(field) is None else _number(quote, field)


def tiingo_partial_bar(body: Any, ticker: str, today: date) -> dict[str, Any] | None:
    """Today's provisional bar from an IEX answer, when it quotes a trade from today's session;
    before the open its `last` is yesterday's, and a bar from it would be invented."""
    quotes = _list_of_records(body, "IEX")
    if not quotes:
        return None
    quote = quotes[0]
    try:
        stamp = datetime.fromisoformat(str(quote.get("timestamp")))
    except ValueError:
        raise MalformedAnswer("Tiingo IEX timestamp is not ISO 8601") from None
    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    if stamp.astimezone(EXCHANGE_TZ).date() != today:
        return None
    state = market_state(stamp)  # today's session must have opened by the time of the quote
    if today not in (state.current, state.last_completed):
        return None
    price = next((k for k in ("tngoLast", "last") if quote.get(k) is not None), None)
    if price is None:
        return None
    # IEX's `volume` counts IEX's own trades only, a few percent of the day's: leave it unknown
    # rather than put a number beside the consolidated daily volumes that means something else
    return {
        "ticker": ticker,
        "date": today,
        "close": _number(quote, price),
        "volume": math.nan,
        "source": "tiingo",
    } | {field: _optional(quote, field) for field in ("open", "high", "low")}


def _retry_after(header: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110)."""
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(header) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


class TiingoProvider:
    """Tiingo's official REST API. The token travels only in the Authorization header: never in
    a URL, a log line or an exception message."""

    name = "tiingo"

    def __init__(
        self,
        token: str,
        base_url: str = "https://api.tiingo.com",
        client: httpx.Client | None = None,
        today: Callable[[], date] | None = None,
    ) -> None:
        if not token:
            raise ValueError("the Tiingo provider needs an API key: set TIINGO_API_KEY")
        self._token = token
        self._base_url = base_url.rstrip("/")
        self._client = client
        self._today = today or _new_york_today

    def __repr__(self) -> str:
        return f"TiingoProvider(base_url={self._base_url!r})"

    def daily_bars(self, ticker: str, start: date, end: date) -> ProviderAnswer:
        if ticker.strip().startswith("^"):  # Yahoo's spelling of an index
            raise UnknownSymbol(f"{ticker.strip()}: {UNOFFERED[self.name]}")
        ours = _checked(ticker, start, end)
        symbol = provider_symbol(ours, self.name)
        params = {"startDate": start.isoformat(), "endDate": end.isoformat()}
        params |= {"resampleFreq": "daily", "format": "json"}
        today = self._today()
        with self._session() as client:
            body = self._get(client, f"/tiingo/daily/{symbol}/prices", params, symbol)
            rows, actions = tiingo_daily(body, ours)
            if start <= today <= end and all(row["date"] != today for row in rows):
                partial = self._partial_bar(client, symbol, ours, today)
                rows += [partial] if partial else []
        return _answer(ours, _bars_frame(rows), actions, start, end)

    def _partial_bar(
        self, client: httpx.Client, symbol: str, ticker: str, today: date
    ) -> dict[str, Any] | None:
        try:
            body = self._get(client, f"/iex/{symbol}", {}, symbol)
        except UnknownSymbol:  # the EOD endpoint knows the symbol; IEX just does not quote it
            return None
        return tiingo_partial_bar(body, ticker, today)

    @contextmanager
    def _session(self) -> Iterator[httpx.Client]:
        """The injected client (its owner closes it) or one of ours, closed after the call."""
        if self._client is not None:
            yield self._client
            return
        with httpx.Client(timeout=TIINGO_TIMEOUT_S) as client:
            yield client

    def _get(self, client: httpx.Client, path: str, params: dict[str, str], symbol: str) -> Any:
        headers = {"Authorization": f"Token {self._token}", "Accept": "application/json"}
        try:
            response = client.get(
                self._base_url + path, params=params, headers=headers, timeout=TIINGO_TIMEOUT_S
            )
        except httpx.HTTPError as exc:  # httpx's text never holds headers; scrub all the same
            reason = f"{type(exc).__name__}: {exc}".replace(self._token, "***")
            raise ProviderError(f"Tiingo request for {symbol} failed: {reason}") from exc
        self._raise_for_status(response, symbol)
        try:
            return response.json()
        except ValueError:  # the decoder's error quotes the body: leave it out
            raise MalformedAnswer(f"Tiingo answer for {symbol} is not JSON") from None

    def _raise_for_status(self, response: httpx.Response, symbol: str) -> None:
        status = response.status_code
        if status == 404:
            raise UnknownSymbol(f"Tiingo does not know {symbol}: {self._detail(response)}")
        if status == 429:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise RateLimited(f"Tiingo rate-limited the request for {symbol}", retry_after)
        if status in (401, 403):
            raise ProviderError(f"Tiingo refused the API key (HTTP {status}); check TIINGO_API_KEY")
        if status >= 400:
            raise ProviderError(f"Tiingo answered HTTP {status} for {symbol}")

    def _detail(self, response: httpx.Response) -> str:
        """The documented 404 body's `detail`, short and scrubbed of the token."""
        try:
            detail = response.json().get("detail", "")
        except (ValueError, AttributeError):
            detail = ""
        return str(detail)[:200].replace(self._token, "***") or "not found"


def make_provider(
    name: str, tiingo_api_key: str | None = None, tiingo_base_url: str = "https://api.tiingo.com"
) -> LiveProvider:
    """The configured live provider: "yfinance" (no key) or "tiingo" (needs TIINGO_API_KEY)."""
    if name == "yfinance":
        return YFinanceProvider()
    if name == "tiingo":
        if not tiingo_api_key:
            raise ValueError("the tiingo live provider needs an API key: set TIINGO_API_KEY")
        return TiingoProvider(tiingo_api_key, base_url=tiingo_base_url)
    raise ValueError(f"unknown live provider {name!r}: choose 'yfinance' or 'tiingo'")
