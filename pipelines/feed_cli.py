"""`stockcopilot feed`: run the market feed (replay of stored bars, or live polling)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date
from typing import Annotated

import typer
from rich.console import Console

from api.settings import Settings


def register_feed_commands(
    app: typer.Typer, settings_factory: Callable[[], Settings], console: Console
) -> None:
    feed_app = typer.Typer(help="Market feed.", no_args_is_help=True)
    app.add_typer(feed_app, name="feed")

    @feed_app.command("replay")
    def replay(
        start: Annotated[str, typer.Option(help="first trading day to replay, YYYY-MM-DD")],
        end: Annotated[str | None, typer.Option(help="last day (default: the newest)")] = None,
        interval: Annotated[float, typer.Option(help="seconds between trading days")] = 3.0,
    ) -> None:
        """Play stored bars as if live: quotes into Redis and on the `quotes` channel, due
        forecasts scored, one trading day every `interval` seconds."""
        from redis.asyncio import Redis

        from api.db.pool import create_pool
        from api.feed import BarProcessor, ReplayFeed, run_feed
        from pipelines.embedded import resolved_settings

        first = date.fromisoformat(start)
        last = date.fromisoformat(end) if end else None
        with resolved_settings(settings_factory()) as ready:

            async def run() -> int:
                pool = await create_pool(ready)
                redis = Redis.from_url(ready.redis_url or "", decode_responses=True)
                try:
                    feed = ReplayFeed(pool, first, interval, last)
                    return await run_feed(feed, BarProcessor(pool, redis), asyncio.Event())
                finally:
                    await redis.aclose()
                    await pool.close()

            days = asyncio.run(run())
        console.print(f"replayed {days} trading day(s)")
