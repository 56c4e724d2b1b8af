"""Repository for the embedded return windows (pgvector): one HNSW index per window length."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import asyncpg

type WindowRecord = tuple[str, date, str, float | None, float | None]
"""(ticker, window end date, embedding as pgvector text, 5-bar outcome, 20-bar outcome)."""


class ReturnWindowRepository:
    """Takes a connection: rebuilding stages rows in a temporary table and `nearest` sets
    planner options, both for one transaction on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def start_staging(self) -> None:
        """A temporary table for the new windows, dropped at commit (call in a transaction)."""
        await self._conn.execute(
            "CREATE TEMP TABLE staging_windows (ticker text, date date, embedding text, "
            "fwd_5 double precision, fwd_20 double precision) ON COMMIT DROP"
        )

    async def stage(self, records: Iterable[WindowRecord]) -> None:
        await self._conn.copy_records_to_table("staging_windows", records=records)

    async def replace_with_staged(self, window: int, tickers: list[str]) -> None:
        """Swap the tickers' windows of this length for the staged ones, and rebuild the index."""
        # Loading into a live HNSW index costs a graph insertion per row; dropping it and
        # building it once over the loaded rows is many times faster (same definition as
        # migration 0008). Readers keep the old rows until this transaction commits.
        await self._conn.execute(f"DROP INDEX IF EXISTS return_windows_hnsw_{window:d}")
        await self._conn.execute(
            "DELETE FROM return_windows WHERE window_len = $1 AND ticker = ANY($2::text[])",
            window,
            tickers,
        )
        await self._conn.execute(
            """INSERT INTO return_windows (ticker, window_len, date, embedding, fwd_5, fwd_20)
               SELECT ticker, $1, date, embedding::vector, fwd_5, fwd_20 FROM staging_windows""",
            window,
        )
        await self._conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        await self._conn.execute(
            f"""CREATE INDEX return_windows_hnsw_{window:d} ON return_windows
                USING hnsw ((embedding::vector({window:d})) vector_l2_ops)
                WHERE window_len = {window:d}"""
        )

    async def built(self, window: int) -> bool:
        """Whether any window of this length is indexed."""
        return await self._conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM return_windows WHERE window_len = $1)", window
        )

    async def nearest(
        self, embedding: str, window: int, until: date, limit: int
    ) -> list[asyncpg.Record]:
        """The `limit` windows closest to `embedding` that end by `until` and whose 20-bar
        outcome is known: (ticker, date, fwd_5, fwd_20, distance), nearest first."""
        async with self._conn.transaction():
            # HNSW with a filter: keep scanning the graph until enough rows pass it
            await self._conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            await self._conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, limit):d}")
            return await self._conn.fetch(
                f"""SELECT ticker, date, fwd_5, fwd_20,
                           embedding::vector({window:d}) <-> $1::vector({window:d}) AS distance
                    FROM return_windows
                    WHERE window_len = $2 AND date <= $3 AND fwd_20 IS NOT NULL
                    ORDER BY embedding::vector({window:d}) <-> $1::vector({window:d})
                    LIMIT $4""",
                embedding,
                window,
                until,
                limit,
            )
