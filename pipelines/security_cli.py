"""`stockcopilot users` and `stockcopilot keys`: operator commands for accounts and encryption."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

import asyncpg
import typer
from rich.console import Console

from api.security.crypto import Keyring, email_context, secret_context
from api.settings import Settings
from pipelines.ab_cli import with_conn


def register_security_commands(
    app: typer.Typer, settings_factory: Callable[[], Settings], console: Console
) -> None:
    users_app = typer.Typer(help="Accounts.", no_args_is_help=True)
    keys_app = typer.Typer(help="Field-encryption keys.", no_args_is_help=True)
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")

    @users_app.command("set-role")
    def set_role(
        email: Annotated[str, typer.Option(help="the account's e-mail address")],
        role: Annotated[str, typer.Option(help="user or admin")] = "admin",
    ) -> None:
        """Make an account an administrator (or a plain user again)."""
        from api.db.users import SecurityEventRepository, UserRepository
        from api.services.auth import ROLES, normalise_email

        if role not in ROLES:
            raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}")
        settings = settings_factory()
        keyring = Keyring.from_settings(settings)
        index = keyring.blind_index(normalise_email(email))

        async def change(conn: asyncpg.Connection) -> bool:
            user = await UserRepository(conn).by_email_index(index)
            if user is None:
                return False
            await UserRepository(conn).set_role(user.id, role)
            await SecurityEventRepository(conn).record(
                "role_changed", user.id, None, {"role": role}
            )
            return True

        if not with_conn(settings, change):
            console.print("[red]no account with that e-mail[/red]")
            raise typer.Exit(1)
        console.print(f"role set to {role}")

    @keys_app.command("generate")
    def generate(
        key_id: Annotated[str, typer.Option(help="id of the new key, e.g. the date")],
    ) -> None:
        """Print a new random AES-256 key as the JSON entry for ENCRYPTION_KEYS."""
        from api.security.crypto import generate_key

        typer.echo(json.dumps({key_id: generate_key()}))

    @keys_app.command("rotate")
    def rotate() -> None:
        """Re-encrypt every encrypted field with the active key (ENCRYPTION_ACTIVE_KEY).

        Add the new key to ENCRYPTION_KEYS and make it active first; once this reports 0 fields
        left on old keys, old keys can be removed from the ring.
        """
        settings = settings_factory()
        keyring = Keyring.from_settings(settings)

        async def run(conn: asyncpg.Connection) -> tuple[int, int]:
            return await rotate_fields(conn, keyring)

        changed, total = with_conn(settings, run)
        console.print(
            f"re-encrypted {changed} of {total} field(s) with key {keyring.active!r}; "
            f"0 left on older keys"
        )

    @keys_app.command("retire-dev-key")
    def retire_dev_key() -> None:
        """Re-seal accounts and secrets an older release stored under its public development key
        with this data folder's keys (`stockcopilot up` does it on start, too)."""
        from pipelines.dev_key import reseal

        settings = settings_factory()
        keyring = Keyring.from_settings(settings)

        async def run(conn: asyncpg.Connection) -> object:
            return await reseal(conn, keyring)

        done = with_conn(settings, run)
        console.print(f"re-sealed {done.accounts} account(s) and {done.secrets} secret(s)")


async def rotate_fields(conn: asyncpg.Connection, keyring: Keyring) -> tuple[int, int]:
    """Re-encrypt users' e-mails and stored secrets under the active key, in one transaction.

    Returns (fields changed, fields seen)."""
    from api.db.users import UserRepository, UserSecretRepository

    users, secrets = UserRepository(conn), UserSecretRepository(conn)
    changed = total = 0
    async with conn.transaction():
        for user_id, email_ct in await users.email_ciphertexts():
            total += 1
            fresh = keyring.reencrypt(email_ct, email_context(user_id))
            if fresh is not None:
                await users.set_email_ciphertext(user_id, fresh)
                changed += 1
        for user_id, name, ciphertext in await secrets.ciphertexts():
            total += 1
            fresh = keyring.reencrypt(ciphertext, secret_context(user_id, name))
            if fresh is not None:
                await secrets.set_ciphertext(user_id, name, fresh)
                changed += 1
    return changed, total


def register_similarity_commands(
    app: typer.Typer, settings_factory: Callable[[], Settings], console: Console
) -> None:
    similarity_app = typer.Typer(help="Similarity search index.", no_args_is_help=True)
    app.add_typer(similarity_app, name="similarity")

    @similarity_app.command("build")
    def build(
        window: Annotated[int, typer.Option(help="bars per return path: 20, 30 or 60")] = 30,
        ticker: Annotated[
            list[str] | None, typer.Option(help="only these tickers (repeatable)")
        ] = None,
    ) -> None:
        """(Re)build the embeddings of every ticker's return windows for similarity search."""
        from api.services.similarity import build as build_windows
        from features.similarity import WINDOWS

        if window not in WINDOWS:
            raise typer.BadParameter(f"window must be one of {WINDOWS}")
        tickers = [t.upper() for t in ticker] if ticker else None

        async def run(conn: asyncpg.Connection) -> object:
            return await build_windows(conn, window, tickers)

        with console.status(f"embedding {window}-bar windows and indexing them (HNSW)…"):
            report = with_conn(settings_factory(), run)
        console.print(
            f"indexed {report.rows} windows of {report.window} bars for {report.tickers} ticker(s)"
        )
