"""The prediction log, written off the request path: served forecasts are queued in memory and
inserted in batches (one statement per batch) by a background task.

A request never waits for the insert. A failed insert keeps its rows and is retried with
backoff; `close` (the app's shutdown) writes everything still queued before the pool closes, so
a clean stop loses no row. Only a crash can lose what was queued in the last `flush_s` seconds.
The queue is bounded (`max_pending`): if the database stays away that long, the oldest rows are
dropped and counted in the log, never the process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import asyncpg
import structlog

from api.db.ab import LoggedPrediction, PredictionLogRepository
from api.db.pool import DatabaseUnavailable

log = structlog.get_logger(__name__)
WRITE_ERRORS = (asyncpg.PostgresError, OSError, DatabaseUnavailable)


class PredictionLog:
    def __init__(
        self,
        pool: asyncpg.Pool,
        flush_s: float = 0.2,
        batch_rows: int = 1_000,
        max_pending: int = 200_000,
    ) -> None:
        self._repo = PredictionLogRepository(pool)
        self._flush_s = flush_s
        self._batch_rows = batch_rows
        self._max_pending = max_pending
        self._pending: list[LoggedPrediction] = []
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def add(self, rows: Sequence[LoggedPrediction]) -> None:
        """Queue rows for the next batch; returns at once."""
        self._pending.extend(rows)
        overflow = len(self._pending) - self._max_pending
        if overflow > 0:
            del self._pending[:overflow]
            self.dropped += overflow
            log.error("prediction_log_overflow", dropped=overflow, total_dropped=self.dropped)
        if len(self._pending) >= self._batch_rows:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write everything queued so far; raises if the database refuses (rows stay queued)."""
        async with self._writing:
            while self._pending:
                batch = self._pending[: self._batch_rows]
                await self._repo.record(batch)
                del self._pending[: len(batch)]

    async def _run(self) -> None:
        backoff = self._flush_s
        while True:
            with contextlib.suppress(TimeoutError):  # a full batch, or the interval
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            try:
                await self.flush()
                backoff = self._flush_s
            except WRITE_ERRORS as exc:
                backoff = min(5.0, backoff * 2)
                log.warning(
                    "prediction_log_write_failed",
                    error=type(exc).__name__,
                    pending=self.pending,
                    retry_in_s=backoff,
                )

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the writer and write what is queued, retrying until `timeout_s`."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        deadline = time.monotonic() + timeout_s
        while self._pending:
            try:
                await self.flush()
            except WRITE_ERRORS as exc:
                if time.monotonic() >= deadline:
                    log.error(
                        "prediction_log_lost_on_shutdown",
                        rows=self.pending,
                        error=type(exc).__name__,
                    )
                    return
                await asyncio.sleep(0.2)
