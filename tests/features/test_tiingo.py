"""The Tiingo provider: a real httpx client against a loopback server serving recorded answers
in Tiingo's documented formats (tests/fixtures/tiingo, described in tests/fixtures/README.md)."""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from features.live import (
    CorporateAction,
    MalformedAnswer,
    ProviderError,
    RateLimited,
    TiingoProvider,
    UnknownSymbol,
    make_provider,
)
from tests.live_server import free_port, serving_in_thread

FIXTURES = Path(__file__).parent.parent / "fixtures" / "tiingo"
TOKEN = "tiingo-test-token-5f3a9c"  # distinctive, so a leak anywhere is easy to spot
LATER = date(2025, 3, 3)  # "today" for answers recorded after the window
MONDAY = date(2024, 7, 8)  # "today" for the answers recorded mid-session
DAILY_MSFT = "/tiingo/daily/msft/prices"


@dataclass(frozen=True)
class Recorded:
    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


@dataclass(frozen=True)
class Seen:
    path: str
    url: str
    query: dict[str, str]
    authorization: str | None


class RecordedTiingo:
    """A loopback stand-in for api.tiingo.com: answers by path, remembers every request."""

    def __init__(self) -> None:
        self.answers: dict[str, Recorded] = {}
        self.seen: list[Seen] = []

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/{path:path}")
        async def answer(path: str, request: Request) -> Response:
            query, auth = dict(request.query_params), request.headers.get("authorization")
            self.seen.append(Seen(f"/{path}", str(request.url), query, auth))
            default = Recorded(b'{"detail": "Not found."}', status=404)
            recorded = self.answers.get(f"/{path}", default)
            return Response(recorded.body, recorded.status, recorded.headers, recorded.media_type)

        return app

    def serve(self, path: str, fixture: str | None = None, **recorded: Any) -> None:
        body = (FIXTURES / fixture).read_bytes() if fixture else recorded.pop("body", b"[]")
        self.answers[path] = Recorded(body, **recorded)

    @property
    def paths(self) -> list[str]:
        return [seen.path for seen in self.seen]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[RecordedTiingo, str]]:
    recorded = RecordedTiingo()
    with serving_in_thread(recorded.app()) as address:
        yield recorded, f"http://{address}"


@pytest.fixture
def tiingo(server: tuple[RecordedTiingo, str]) -> RecordedTiingo:
    recorded, _ = server
    recorded.answers.clear()
    recorded.seen.clear()
    return recorded


def _provider(server: tuple[RecordedTiingo, str], today: date = LATER) -> TiingoProvider:
    return TiingoProvider(TOKEN, base_url=server[1], today=lambda: today)


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _days(answer_bars: Any) -> list[date]:
    return [d.date() for d in answer_bars["date"]]


def test_a_split_inside_the_window_leaves_no_jump_and_is_reported(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo
) -> None:
    tiingo.serve("/tiingo/daily/wmt/prices", "wmt_daily_2024-02-15_2024-02-29.json")
    answer = _provider(server).daily_bars("WMT", date(2024, 2, 15), date(2024, 2, 29))
    raw = {r["date"][:10]: r["close"] for r in _fixture("wmt_daily_2024-02-15_2024-02-29.json")}
    assert raw["2024-02-26"] / raw["2024-02-23"] == pytest.approx(1 / 3, rel=0.01)  # raw jumps
    closes = answer.bars.set_index("date")["close"]
    assert closes["2024-02-26"] / closes["2024-02-23"] == pytest.approx(1.0, abs=0.01)
    assert answer.actions == (CorporateAction("WMT", date(2024, 2, 26), split=3.0),)
    assert answer.bars["source"].unique().tolist() == ["tiingo"]
    assert answer.bars.loc[0, "volume"] == 3 * 9_213_400  # adjVolume, split-adjusted
    assert date(2024, 2, 19) not in _days(answer.bars)  # Presidents' Day


def test_requests_follow_the_documented_api_with_the_token_only_in_the_header(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo
) -> None:
    tiingo.serve("/tiingo/daily/wmt/prices", "wmt_daily_2024-02-15_2024-02-29.json")
    _provider(server).daily_bars("wmt", date(2024, 2, 15), date(2024, 2, 29))
    [seen] = tiingo.seen  # end < today: the IEX endpoint is not asked
    assert seen.path == "/tiingo/daily/wmt/prices"
    assert seen.query == {
        "startDate": "2024-02-15",
        "endDate": "2024-02-29",
        "resampleFreq": "daily",
        "format": "json",
    }
    assert seen.authorization == f"Token {TOKEN}"
    assert TOKEN not in seen.url


def test_a_dividend_is_reported_and_earlier_closes_are_adjusted_down_by_its_factor(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo
) -> None:
    tiingo.serve("/tiingo/daily/ko/prices", "ko_daily_2024-06-10_2024-06-21.json")
    answer = _provider(server).daily_bars("KO", date(2024, 6, 10), date(2024, 6, 21))
    assert answer.actions == (CorporateAction("KO", date(2024, 6, 14), dividend=0.485),)
    raw = {r["date"][:10]: r["close"] for r in _fixture("ko_daily_2024-06-10_2024-06-21.json")}
    closes = answer.bars.set_index("date")["close"]
    ratio_before = closes["2024-06-13"] / raw["2024-06-13"]
    ratio_after = closes["2024-06-14"] / raw["2024-06-14"]
    assert ratio_before / ratio_after == pytest.approx(1 - 0.485 / raw["2024-06-13"], rel=1e-5)
    assert date(2024, 6, 19) not in _days(answer.bars)  # Juneteenth


def test_todays_partial_bar_comes_from_iex_with_the_prices_given(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo
) -> None:
    tiingo.serve(DAILY_MSFT, "msft_daily_2024-07-01_2024-07-08.json")
    tiingo.serve("/iex/msft", "iex_msft_2024-07-08_midday.json")
    answer = _provider(server, today=MONDAY).daily_bars("MSFT", date(2024, 7, 1), MONDAY)
    assert tiingo.paths == [DAILY_MSFT, "/iex/msft"]
    assert _days(answer.bars) == [
        date(2024, 7, 1),
        date(2024, 7, 2),
        date(2024, 7, 3),
        date(2024, 7, 5),  # 2024-07-04: Independence Day
        MONDAY,
    ]
    today = answer.bars.iloc[-1]
    assert [today[c] for c in ("open", "high", "low", "close")] == pytest.approx(
        [466.55, 467.70, 464.46, 465.10]
    )
    assert math.isnan(today["volume"])  # IEX's own trades only: not the day's volume


def test_missing_iex_fields_stay_missing(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo
) -> None:
    quote = _fixture("iex_msft_2024-07-08_midday.json")
    quote[0] |= {"open": None, "high": None, "low": None, "volume": None, "tngoLast": None}
    tiingo.serve(DAILY_MSFT, "msft_daily_2024-07-01_2024-07-08.json")
    tiingo.serve("/iex/msft", body=json.dumps(quote).encode())
    bars = _provider(server, today=MONDAY).daily_bars("MSFT", MONDAY, MONDAY).bars
    [today] = bars.to_dict("records")
    assert today["close"] == pytest.approx(465.10)  # `last` when tngoLast is absent
    assert all(math.isnan(today[c]) for c in ("open", "high", "low", "volume"))


@pytest.mark.parametrize(
    ("today", "timestamp"),
    [
        (MONDAY, None),  # the recorded pre-open answer: yesterday's last, nulls elsewhere
        (date(2024, 7, 4), "2024-07-03T13:00:00-04:00"),  # a holiday: the last quote is older
    ],
    ids=["before-the-open", "holiday"],
)
def test_no_partial_bar_is_invented_without_a_trade_today(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo, today: date, timestamp: str | None
) -> None:
    quote = _fixture("iex_msft_2024-07-08_preopen.json")
    if timestamp:
        quote[0] |= {"timestamp": timestamp, "last": 460.77}
    tiingo.serve(DAILY_MSFT, "msft_daily_2024-07-01_2024-07-08.json")
    tiingo.serve("/iex/msft", body=json.dumps(quote).encode())
    answer = _provider(server, today=today).daily_bars("MSFT", date(2024, 7, 1), today)
    assert "/iex/msft" in tiingo.paths
    assert max(_days(answer.bars)) == date(2024, 7, 5 if today == MONDAY else 3)


def test_iex_not_quoting_the_symbol_leaves_the_finished_days(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo
) -> None:
    tiingo.serve(DAILY_MSFT, "msft_daily_2024-07-01_2024-07-08.json")
    tiingo.serve("/iex/msft", "not_found.json", status=404)
    answer = _provider(server, today=MONDAY).daily_bars("MSFT", date(2024, 7, 1), MONDAY)
    assert max(_days(answer.bars)) == date(2024, 7, 5)


@pytest.mark.parametrize("body", [b'{"ticker": "MSFT"}', b'[{"ticker": "MSFT", "timestamp": 5'])
def test_a_malformed_iex_answer_is_malformed(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo, body: bytes
) -> None:
    tiingo.serve(DAILY_MSFT, "msft_daily_2024-07-01_2024-07-08.json")
    tiingo.serve("/iex/msft", body=body)
    with pytest.raises(MalformedAnswer):
        _provider(server, today=MONDAY).daily_bars("MSFT", date(2024, 7, 1), MONDAY)


def test_a_window_without_sessions_is_an_empty_answer(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo
) -> None:
    tiingo.serve(DAILY_MSFT, body=b"[]")  # what Tiingo answers for 2024-07-04..07
    answer = _provider(server).daily_bars("MSFT", date(2024, 7, 4), date(2024, 7, 7))
    assert answer.bars.empty
    assert answer.actions == ()
    assert "date" in answer.bars.columns


def test_an_unknown_symbol_is_an_unknown_symbol(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo
) -> None:
    tiingo.serve("/tiingo/daily/zzzz/prices", "not_found.json", status=404)
    with pytest.raises(UnknownSymbol, match="Ticker 'ZZZZ' not found"):
        _provider(server).daily_bars("ZZZZ", date(2024, 7, 1), date(2024, 7, 5))


@pytest.mark.parametrize(
    ("headers", "retry_after_s"),
    [({"Retry-After": "30"}, 30.0), ({}, None)],
    ids=["with-retry-after", "without"],
)
def test_429_is_rate_limited_with_its_retry_after(
    server: tuple[RecordedTiingo, str],
    tiingo: RecordedTiingo,
    headers: dict[str, str],
    retry_after_s: float | None,
) -> None:
    tiingo.serve(DAILY_MSFT, body=b"Too Many Requests", status=429, headers=headers)
    with pytest.raises(RateLimited) as caught:
        _provider(server).daily_bars("MSFT", date(2024, 7, 1), date(2024, 7, 5))
    assert caught.value.retry_after_s == retry_after_s


def test_retry_after_as_an_http_date_becomes_seconds(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo
) -> None:
    headers = {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}
    tiingo.serve(DAILY_MSFT, body=b"", status=429, headers=headers)
    with pytest.raises(RateLimited) as caught:
        _provider(server).daily_bars("MSFT", date(2024, 7, 1), date(2024, 7, 5))
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 0


@pytest.mark.parametrize(("status", "says"), [(500, "HTTP 500"), (401, "TIINGO_API_KEY")])
def test_server_errors_are_retryable_provider_errors(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo, status: int, says: str
) -> None:
    tiingo.serve(DAILY_MSFT, body=b'{"detail": "oops"}', status=status)
    with pytest.raises(ProviderError, match=says) as caught:
        _provider(server).daily_bars("MSFT", date(2024, 7, 1), date(2024, 7, 5))
    assert type(caught.value) is ProviderError


def test_an_unreachable_server_is_a_provider_error() -> None:
    provider = TiingoProvider(
        TOKEN, base_url=f"http://127.0.0.1:{free_port()}", today=lambda: LATER
    )
    with pytest.raises(ProviderError, match="ConnectError") as caught:
        provider.daily_bars("MSFT", date(2024, 7, 1), date(2024, 7, 5))
    assert TOKEN not in "".join(traceback.format_exception(caught.value))


def _wmt(**changes: Any) -> bytes:
    records = _fixture("wmt_daily_2024-02-15_2024-02-29.json")
    records[3] = {k: v for k, v in (records[3] | changes).items() if v is not ...}
    return json.dumps(records).encode()


MALFORMED = {
    "html": Recorded(b"<html><body>Service Unavailable</body></html>", media_type="text/html"),
    "truncated": Recorded((FIXTURES / "wmt_daily_2024-02-15_2024-02-29.json").read_bytes()[:300]),
    "an-object": Recorded(b'{"detail": "Error: unexpected"}'),
    "missing-field": Recorded(_wmt(adjClose=...)),
    "zero-price": Recorded(_wmt(adjLow=0.0)),
    "negative-price": Recorded(_wmt(adjClose=-58.1)),
    "text-price": Recorded(_wmt(adjOpen="57.2")),
    "bad-date": Recorded(_wmt(date="yesterday")),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_a_body_out_of_format_is_malformed(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo, case: str
) -> None:
    tiingo.answers["/tiingo/daily/wmt/prices"] = MALFORMED[case]
    with pytest.raises(MalformedAnswer):
        _provider(server).daily_bars("WMT", date(2024, 2, 15), date(2024, 2, 29))


ECHOING = {  # answers that quote the token back must not carry it into our errors
    "404": Recorded(f'{{"detail": "Error: Ticker not found for token {TOKEN}"}}'.encode(), 404),
    "401": Recorded(f'{{"detail": "Invalid token {TOKEN}"}}'.encode(), 401),
    "429": Recorded(TOKEN.encode(), 429, {"Retry-After": "5"}),
    "500": Recorded(TOKEN.encode(), 500),
    "not-json": Recorded(f"<html>{TOKEN}</html>".encode(), media_type="text/html"),
    "bad-date": Recorded(f'[{{"date": "{TOKEN}"}}]'.encode()),
    "bad-field": Recorded(_wmt(adjClose=TOKEN)),
}


@pytest.mark.parametrize("case", list(ECHOING), ids=list(ECHOING))
def test_the_token_never_appears_in_an_error(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo, case: str
) -> None:
    tiingo.answers[DAILY_MSFT] = ECHOING[case]
    with pytest.raises(ProviderError) as caught:
        _provider(server).daily_bars("MSFT", date(2024, 7, 1), date(2024, 7, 5))
    assert TOKEN not in "".join(traceback.format_exception(caught.value))
    assert TOKEN not in repr(caught.value)


@pytest.mark.parametrize("ticker", ["SPX", "^GSPC"])
def test_index_data_is_not_offered_and_nothing_is_asked(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo, ticker: str
) -> None:
    with pytest.raises(UnknownSymbol, match=r"no index data.*yfinance"):
        _provider(server).daily_bars(ticker, date(2024, 7, 1), date(2024, 7, 5))
    assert tiingo.seen == []


def test_class_shares_are_asked_in_tiingos_spelling(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo
) -> None:
    tiingo.serve("/tiingo/daily/brk-b/prices", body=b"[]")
    answer = _provider(server).daily_bars("BRK.B", date(2024, 7, 4), date(2024, 7, 7))
    assert tiingo.paths == ["/tiingo/daily/brk-b/prices"]
    assert answer.ticker == "BRK.B"


def test_make_provider_builds_a_tiingo_provider_for_the_configured_server(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo
) -> None:
    tiingo.serve("/tiingo/daily/ko/prices", "ko_daily_2024-06-10_2024-06-21.json")
    provider = make_provider("tiingo", tiingo_api_key=TOKEN, tiingo_base_url=server[1])
    assert provider.name == "tiingo"
    assert len(provider.daily_bars("KO", date(2024, 6, 10), date(2024, 6, 21)).bars) == 9
    assert TOKEN not in repr(provider)


def test_an_injected_client_is_used_and_left_open_for_its_owner(
    server: tuple[RecordedTiingo, str], tiingo: RecordedTiingo
) -> None:
    tiingo.serve(DAILY_MSFT, "msft_daily_2024-07-01_2024-07-08.json")
    with httpx.Client() as client:
        provider = TiingoProvider(TOKEN, base_url=server[1], client=client, today=lambda: LATER)
        assert len(provider.daily_bars("MSFT", date(2024, 7, 1), date(2024, 7, 5)).bars) == 4
        assert not client.is_closed
    assert tiingo.seen[0].authorization == f"Token {TOKEN}"


def test_a_provider_without_a_token_is_refused() -> None:
    with pytest.raises(ValueError, match="TIINGO_API_KEY"):
        TiingoProvider("")
