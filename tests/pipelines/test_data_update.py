"""`stockcopilot data update` end to end: the real CLI, the real Tiingo client over HTTP to a
loopback server answering in Tiingo's documented format, the embedded database."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from pydantic import SecretStr

from api.settings import Settings
from tests.features.test_tiingo import TOKEN, RecordedTiingo
from tests.live_server import serving_in_thread
from tests.utils import copy_instrument, invoke

TICKER = "KOUPD"


@pytest.fixture
def tiingo(monkeypatch: pytest.MonkeyPatch, cli_env: None) -> Iterator[RecordedTiingo]:
    recorded = RecordedTiingo()
    with serving_in_thread(recorded.app()) as address:
        monkeypatch.setenv("MARKET_DATA_PROVIDER", "tiingo")
        monkeypatch.setenv("TIINGO_API_KEY", TOKEN)
        monkeypatch.setenv("TIINGO_BASE_URL", f"http://{address}")
        yield recorded


@pytest.fixture(autouse=True)
async def copy_removed(pool: asyncpg.Pool) -> AsyncIterator[None]:
    yield
    await pool.execute("DELETE FROM instruments WHERE ticker = $1", TICKER)
    # what the recorded Tiingo answers added to bundled tickers, and the provider's history
    await pool.execute("DELETE FROM bars WHERE source = 'tiingo'")
    await pool.execute("DELETE FROM corporate_actions WHERE source = 'tiingo'")
    await pool.execute("DELETE FROM bar_adjustments")
    await pool.execute("DELETE FROM feed_status")


async def test_data_update_stores_new_bars_once_and_summarises_every_ticker(
    tiingo: RecordedTiingo, pool: asyncpg.Pool
) -> None:
    await copy_instrument(pool, "KO", TICKER)
    tiingo.serve("/tiingo/daily/koupd/prices", "ko_daily_2024-06-10_2024-06-21.json")

    first = await invoke("data", "update", "--tickers", TICKER.lower(), "--tickers", "SPX")
    assert first.exit_code == 0, first.output
    stored = await pool.fetch(
        "SELECT date, source, final FROM bars WHERE ticker = $1 AND date >= '2024-01-01'", TICKER
    )
    assert len(stored) == 9  # 2024-06-10 .. 2024-06-21 without Juneteenth, all final
    assert {(r["source"], r["final"]) for r in stored} == {("tiingo", True)}
    assert "data update from tiingo" in first.output
    assert TICKER in first.output and "2024-06-21" in first.output
    assert "Tiingo has no index data" in first.output  # SPX: a summary row, not a crash
    assert "9 new bar(s) for 1 of 2 ticker(s); 1 failed" in first.output
    seen = [s for s in tiingo.seen if s.path == "/tiingo/daily/koupd/prices"]
    assert seen and all(s.authorization == f"Token {TOKEN}" for s in seen)
    assert all(TOKEN not in s.url for s in tiingo.seen)  # the key travels in a header only
    assert TOKEN not in first.output

    again = await invoke("data", "update", "--tickers", TICKER)
    assert again.exit_code == 0, again.output
    assert "0 new bar(s) for 1 of 1 ticker(s)" in again.output  # idempotent
    assert await pool.fetchval(
        "SELECT count(*) FROM bars WHERE ticker = $1 AND date >= '2024-01-01'", TICKER
    ) == len(stored)


async def test_data_update_refuses_unknown_tickers_and_fails_when_the_provider_is_down(
    tiingo: RecordedTiingo,
) -> None:
    unknown = await invoke("data", "update", "--tickers", "NOSUCHCO")
    assert unknown.exit_code != 0 and "unknown ticker(s): NOSUCHCO" in unknown.output
    for hostile in ("bad ticker!", "KO\x00; DROP TABLE bars", "X" * 500):
        refused = await invoke("data", "update", "--tickers", hostile)
        assert refused.exit_code == 2, refused.output  # a usage error, not a traceback
        assert "invalid ticker" in refused.output and "Traceback" not in refused.output
    tiingo.serve("/tiingo/daily/ko/prices", body=b"<html>maintenance</html>", status=503)
    down = await invoke("data", "update", "--tickers", "KO")
    assert down.exit_code == 1
    assert "0 new bar(s) for 0 of 1 ticker(s); 1 failed" in down.output


async def test_up_catches_up_when_the_provider_answers_and_says_so_in_one_line_when_not(
    tiingo: RecordedTiingo, settings: Settings, pool: asyncpg.Pool
) -> None:
    from rich.console import Console

    from pipelines.up import catch_up_market_data

    keyed = settings.model_copy(
        update={
            "market_data_provider": "tiingo",
            "tiingo_api_key": SecretStr(TOKEN),
            "tiingo_base_url": os.environ["TIINGO_BASE_URL"],
        }
    )
    down = Console(record=True, width=100)
    await asyncio.to_thread(catch_up_market_data, keyed, down)  # nothing answers the probe
    said = down.export_text().strip().splitlines()
    assert len(said) == 1 and said[0].startswith("market data: tiingo not reachable (")
    assert said[0].endswith("the data stays as bundled") and TOKEN not in said[0]

    tiingo.serve("/tiingo/daily/ko/prices", "ko_daily_2024-06-10_2024-06-21.json")
    up = Console(record=True, width=120)
    before = await pool.fetchval("SELECT count(*) FROM bars WHERE source = 'tiingo'")
    await asyncio.to_thread(catch_up_market_data, keyed.model_copy(), up)
    shown = up.export_text()
    assert "market data: updating every instrument from tiingo" in shown
    assert "data update from tiingo" in shown
    assert await pool.fetchval("SELECT count(*) FROM bars WHERE source = 'tiingo'") > before


def test_settings_refuse_tiingo_without_a_key_and_read_an_empty_forecast_family_as_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("MARKET_DATA_PROVIDER", "tiingo")
    monkeypatch.delenv("TIINGO_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="MARKET_DATA_PROVIDER=tiingo needs TIINGO_API_KEY"):
        Settings()
    monkeypatch.setenv("MARKET_DATA_PROVIDER", "yfinance")
    for unset in ("", "none", "OFF"):
        monkeypatch.setenv("FEED_FORECAST_FAMILY", unset)
        assert Settings().feed_forecast_family is None
    monkeypatch.setenv("FEED_FORECAST_FAMILY", "lstm")
    assert Settings().feed_forecast_family == "lstm"
