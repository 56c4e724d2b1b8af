"""Tiingo, the keyed provider (`MARKET_DATA_PROVIDER=tiingo`, `TIINGO_API_KEY`).

Tiingo because its official, documented REST API returns split and dividend factors in the same
end-of-day answer as raw and adjusted prices, and a free key tier covers a small universe. It has
no index data, so yfinance serves the benchmark (SPX); its daily endpoint has finished days
only, so today's provisional bar comes from its IEX endpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from features.live.base import (
    EXCHANGE_TZ,
    UNOFFERED,
    CorporateAction,
    MalformedAnswer,
    ProviderAnswer,
    ProviderError,
    RateLimited,
    UnknownSymbol,
    answer_within,
    bars_frame,
    checked,
    new_york_today,
    provider_symbol,
)
from features.sessions import market_state

TIINGO_TIMEOUT_S = 10.0
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
        self._today = today or new_york_today

    def __repr__(self) -> str:
        return f"TiingoProvider(base_url={self._base_url!r})"

    def daily_bars(self, ticker: str, start: date, end: date) -> ProviderAnswer:
        if ticker.strip().startswith("^"):  # Yahoo's spelling of an index
            raise UnknownSymbol(f"{ticker.strip()}: {UNOFFERED[self.name]}")
        ours = checked(ticker, start, end)
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
        return answer_within(ours, bars_frame(rows), actions, start, end)

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
