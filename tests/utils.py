"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import date

import asyncpg
from redis.asyncio import Redis
from typer.testing import CliRunner, Result

from api.feed import BarProcessor, stored_day
from api.services.alert_evaluator import AlertEvaluator
from api.services.notifications import AlertMailer, Notifier
from api.services.predictions import PredictionService
from training.config import TrainConfig

# A network small enough to fit in a second or two on real data, for tests that need one.
TINY = TrainConfig(
    window=10,
    hidden=8,
    layers=1,
    heads=2,
    embedding_dim=4,
    batch_size=256,
    max_epochs=1,
    patience=1,
    train_stride=2,
    n_folds=3,
    test_days=40,
    val_days=30,
    embargo=20,
)

_runner = CliRunner()


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], seconds: float = 15.0, every: float = 0.05
) -> bool:
    """Whether `check` (plain or async) comes to hold within `seconds` of wall-clock time: asked
    every `every` seconds and once more at the deadline (a bound in time, not in tries, so a slow
    check does not stretch it)."""
    deadline = time.monotonic() + seconds
    while True:
        held = check()
        if inspect.isawaitable(held):
            held = await held
        if held or time.monotonic() >= deadline:
            return bool(held)
        await asyncio.sleep(min(every, max(deadline - time.monotonic(), 0)))


async def invoke(*args: str) -> Result:
    """Run the CLI in a worker thread: its own asyncio.run() cannot nest in the test's loop.

    The CLI points the root logger at the runner's stderr, which is closed afterwards; the
    handlers are put back so later log lines (servers in other threads too) have somewhere to go.
    """
    from pipelines.cli import app

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return await asyncio.to_thread(_runner.invoke, app, list(args))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


async def play(
    pool: asyncpg.Pool,
    redis: Redis,
    *days: date,
    alerts: bool = True,
    predictions: PredictionService | None = None,
    mailer: AlertMailer | None = None,
) -> None:
    """Process stored days as the market feed does: bars, quotes, scoring, announcements and,
    with `alerts`, alert evaluation (forecast alerts only when `predictions` is given; alert
    e-mails only with a `mailer`)."""
    notifier = Notifier(pool, redis, mailer)
    evaluator = AlertEvaluator(pool, notifier, predictions) if alerts else None
    processor = BarProcessor(pool, redis, evaluator)
    for day in days:
        await processor.process(day, await stored_day(pool, day))


async def copy_instrument(pool: asyncpg.Pool, source: str, ticker: str) -> None:
    """A new equity `ticker` holding a copy of `source`'s whole stored history (the caller
    removes it afterwards: the session's database is shared)."""
    await pool.execute(
        """INSERT INTO instruments (ticker, name, asset_type, sector, source)
           SELECT $2, name || ' (test copy)', 'equity', sector, 'test' FROM instruments
           WHERE ticker = $1
           ON CONFLICT DO NOTHING""",
        source,
        ticker,
    )
    await pool.execute(
        """INSERT INTO bars (ticker, date, open, high, low, close, volume, source)
           SELECT $2, date, open, high, low, close, volume, source FROM bars WHERE ticker = $1
           ON CONFLICT DO NOTHING""",
        source,
        ticker,
    )
