"""Historical analogues with pgvector: which (ticker, date) windows of recent returns looked
most like this one, and what followed them.

The embeddings table is built (and rebuilt) by `stockcopilot similarity build`; each window
length has its own HNSW index. A query excludes the asked ticker's own windows that overlap
the query window, and analogues whose 20-bar outcome was not yet known at the query date, so
nothing from the future leaks into "what followed".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import asyncpg
import numpy as np
import pandas as pd
import structlog

from api.errors import NotFound, ProblemError, Unprocessable
from features.similarity import HORIZONS, WINDOWS, embed_all, embed_latest, to_pgvector

log = structlog.get_logger(__name__)
CANDIDATES = 10  # fetch k × this many before filtering overlaps and unknown outcomes


@dataclass(frozen=True)
class BuildReport:
    window: int
    tickers: int
    rows: int


async def build(
    conn: asyncpg.Connection, window: int, tickers: list[str] | None = None
) -> BuildReport:
    """(Re)compute every window of the given tickers (default: all) in one transaction."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}")
    names = tickers or [r["ticker"] for r in await conn.fetch("SELECT ticker FROM instruments")]
    total = 0
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE staging_windows (ticker text, date date, embedding text, "
            "fwd_5 double precision, fwd_20 double precision) ON COMMIT DROP"
        )
        for ticker in names:
            rows = await conn.fetch(
                "SELECT date, close FROM bars WHERE ticker = $1 ORDER BY date", ticker
            )
            if len(rows) <= window:
                continue
            close = pd.Series(
                [r["close"] for r in rows], index=pd.DatetimeIndex([r["date"] for r in rows])
            )
            frame = embed_all(close, window)
            records = [
                (
                    ticker,
                    d.date(),
                    to_pgvector(e),
                    None if np.isnan(f5) else float(f5),
                    None if np.isnan(f20) else float(f20),
                )
                for d, e, f5, f20 in frame[["embedding", "fwd_5", "fwd_20"]].itertuples()
            ]
            await conn.copy_records_to_table("staging_windows", records=records)
            total += len(records)
        # Loading into a live HNSW index costs a graph insertion per row; dropping it and
        # building it once over the loaded rows is many times faster (same definition as
        # migration 0008). Readers keep the old rows until this transaction commits.
        await conn.execute(f"DROP INDEX IF EXISTS return_windows_hnsw_{window}")
        await conn.execute(
            "DELETE FROM return_windows WHERE window_len = $1 AND ticker = ANY($2::text[])",
            window,
            names,
        )
        await conn.execute(
            """INSERT INTO return_windows (ticker, window_len, date, embedding, fwd_5, fwd_20)
               SELECT ticker, $1, date, embedding::vector, fwd_5, fwd_20 FROM staging_windows""",
            window,
        )
        await conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        await conn.execute(
            f"""CREATE INDEX return_windows_hnsw_{window} ON return_windows
                USING hnsw ((embedding::vector({window})) vector_l2_ops)
                WHERE window_len = {window}"""
        )
    log.info("similarity_built", window=window, tickers=len(names), rows=total)
    return BuildReport(window, len(names), total)


def _distribution(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    array = np.asarray(values)
    return {
        "n": len(array),
        "mean": float(array.mean()),
        "median": float(np.median(array)),
        "p10": float(np.quantile(array, 0.1)),
        "p90": float(np.quantile(array, 0.9)),
        "share_up": float((array > 0).mean()),
    }


class SimilarityService:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def similar(self, ticker: str, window: int, k: int, as_of: date | None) -> dict[str, Any]:
        if window not in WINDOWS:
            raise Unprocessable("invalid_window", f"window must be one of {WINDOWS}")
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT date, close FROM bars WHERE ticker = $1
                   AND ($2::date IS NULL OR date <= $2) ORDER BY date DESC LIMIT $3""",
                ticker,
                as_of,
                window + 1,
            )
            if not rows:
                raise NotFound("bars", f"{ticker} has no bars on or before {as_of}")
            rows.reverse()
            close = pd.Series([r["close"] for r in rows], index=[r["date"] for r in rows])
            query = embed_latest(close, window)
            if query is None:
                raise Unprocessable(
                    "not_enough_history", f"similarity needs {window + 1} bars with movement"
                )
            end = rows[-1]["date"]
            window_start = rows[0]["date"]
            built = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM return_windows WHERE window_len = $1)", window
            )
            if not built:
                raise ProblemError(
                    503,
                    "similarity_not_built",
                    f"no {window}-bar windows indexed yet; run `stockcopilot similarity build "
                    f"--window {window}`",
                )
            async with conn.transaction():
                # HNSW with a filter: keep scanning the graph until enough rows pass it
                await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                await conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, k * CANDIDATES)}")
                candidates = await conn.fetch(
                    f"""SELECT ticker, date, fwd_5, fwd_20,
                               embedding::vector({window}) <-> $1::vector({window}) AS distance
                        FROM return_windows
                        WHERE window_len = $2 AND date <= $3 AND fwd_20 IS NOT NULL
                        ORDER BY embedding::vector({window}) <-> $1::vector({window})
                        LIMIT $4""",
                    to_pgvector(query),
                    window,
                    end - timedelta(days=30),  # their 20-bar outcome was known by the query date
                    k * CANDIDATES,
                )
        matches = [
            c
            for c in candidates
            # the asked ticker's windows sharing bars with the query window are the query itself
            if not (c["ticker"] == ticker and c["date"] >= window_start)
        ][:k]
        return {
            "ticker": ticker,
            "as_of": end,
            "window": window,
            "matches": [
                {
                    "ticker": m["ticker"],
                    "date": m["date"],
                    "distance": float(m["distance"]),
                    "fwd_5": m["fwd_5"],
                    "fwd_20": m["fwd_20"],
                }
                for m in matches
            ],
            "outcomes": {
                str(h): _distribution([m[f"fwd_{h}"] for m in matches if m[f"fwd_{h}"] is not None])
                for h in HORIZONS
            },
        }
