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
import structlog

from api.db.market import BarRepository, InstrumentRepository
from api.db.similarity import ReturnWindowRepository, WindowRecord
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
    names = tickers or await InstrumentRepository(conn).tickers()
    windows = ReturnWindowRepository(conn)
    total = 0
    async with conn.transaction():
        await windows.start_staging()
        for ticker in names:
            # every stored window: queries only see those the clock allows (`similar`)
            close = await BarRepository(conn).stored_closes(ticker)
            if len(close) <= window:
                continue
            frame = embed_all(close, window)
            records: list[WindowRecord] = [
                (
                    ticker,
                    d.date(),
                    to_pgvector(e),
                    None if np.isnan(f5) else float(f5),
                    None if np.isnan(f20) else float(f20),
                )
                for d, e, f5, f20 in frame[["embedding", "fwd_5", "fwd_20"]].itertuples()
            ]
            await windows.stage(records)
            total += len(records)
        await windows.replace_with_staged(window, names)
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
            close = (await BarRepository(conn).history(ticker, as_of, last=window + 1))["close"]
            if close.empty:
                raise NotFound("bars", f"{ticker} has no bars on or before {as_of}")
            query = embed_latest(close, window)
            if query is None:
                raise Unprocessable(
                    "not_enough_history", f"similarity needs {window + 1} bars with movement"
                )
            end = close.index[-1].date()
            window_start = close.index[0].date()
            windows = ReturnWindowRepository(conn)
            if not await windows.built(window):
                raise ProblemError(
                    503,
                    "similarity_not_built",
                    f"no {window}-bar windows indexed yet: a first `stockcopilot up` builds "
                    "them in the background (see /readyz), or run `stockcopilot similarity "
                    f"build --window {window}`",
                )
            candidates = await windows.nearest(
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
