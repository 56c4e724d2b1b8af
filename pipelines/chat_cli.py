"""`stockcopilot chat`: chat history housekeeping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import asyncpg
import typer
from rich.console import Console

from api.settings import Settings
from pipelines.ab_cli import with_conn


def register_chat_commands(
    app: typer.Typer, settings_factory: Callable[[], Settings], console: Console
) -> None:
    chat_app = typer.Typer(help="AI chat history.", no_args_is_help=True)
    app.add_typer(chat_app, name="chat")

    @chat_app.command("purge")
    def purge(
        days: Annotated[
            int | None,
            typer.Option(min=1, help="keep this many days (default: CHAT_RETENTION_DAYS)"),
        ] = None,
    ) -> None:
        """Delete chat messages older than the retention period, and conversations idle since."""
        from api.services.chat.service import purge_expired

        settings = settings_factory()
        retention = days or settings.chat_retention_days

        async def run(conn: asyncpg.Connection) -> int:
            return await purge_expired(conn, retention)

        deleted = with_conn(settings, run)
        console.print(f"purged {deleted} chat message(s) older than {retention} days")
