"""Ingest with COPY is complete and idempotent; migrations are idempotent."""

from __future__ import annotations

import asyncpg
import pandas as pd

from api.db.migrate import current_version, discover, upgrade
from api.settings import Settings
from pipelines.ingest import IngestReport, ingest_bundled


async def test_first_ingest_stores_every_bundled_bar(
    first_ingest: IngestReport, pool: asyncpg.Pool, bundled_bars: pd.DataFrame
) -> None:
    assert first_ingest.rows_added == first_ingest.rows_seen == len(bundled_bars)
    assert first_ingest.tickers == 27
    stored = await pool.fetchval(  # other tests add imported and live-feed bars of their own
        "SELECT count(*) FROM bars WHERE source = ANY($1::text[])",
        sorted(bundled_bars["source"].unique()),
    )
    assert stored == len(bundled_bars)
    msft_ohlc = await pool.fetchval(
        "SELECT count(*) FROM bars WHERE ticker = 'MSFT' AND open IS NOT NULL"
    )
    assert msft_ohlc == bundled_bars.query("ticker == 'MSFT'")["open"].notna().sum()
    aapl_null = await pool.fetchval(
        "SELECT bool_and(open IS NULL AND volume IS NULL) FROM bars WHERE ticker = 'AAPL'"
    )
    assert aapl_null is True


async def test_second_ingest_adds_zero_rows(
    settings: Settings, first_ingest: IngestReport, pool: asyncpg.Pool
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM bars")
    again = await ingest_bundled(settings.database_url or "", show_progress=False)
    assert again.rows_added == 0
    assert again.rows_seen == first_ingest.rows_seen
    assert await pool.fetchval("SELECT count(*) FROM bars") == before


async def test_migrations_are_idempotent_and_enable_pgvector(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await upgrade(conn) == []
        assert await current_version(conn) == len(discover())
        assert await conn.fetchval("SELECT extname FROM pg_extension WHERE extname = 'vector'")
        keys = await conn.fetch(
            """SELECT a.attname FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
               WHERE i.indrelid = 'bars'::regclass AND i.indisprimary"""
        )
        assert {k["attname"] for k in keys} == {"ticker", "date"}
