"""Re-seal data an older release stored under its public development key.

Before keys were generated per data folder, a default start encrypted e-mails and stored secrets
with a key derived from a public string (key id `dev`) and indexed e-mails with another. Those
keys protect nothing; they are rebuilt here only to read such rows once and seal them again with
the folder's own keys (and re-index the e-mails, so their owners can still sign in). Nothing is
ever sealed with them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import asyncpg

from api.security.crypto import Keyring, email_context, secret_context

RETIRED_KEY_ID = "dev"


def retired_ring() -> Keyring:
    """The old public development ring (the strings are in every earlier release)."""
    key = hashlib.sha256(b"stock-copilot development encryption key").digest()
    index = hashlib.sha256(b"stock-copilot development blind-index key").digest()
    return Keyring({RETIRED_KEY_ID: key}, RETIRED_KEY_ID, index)


@dataclass(frozen=True)
class Resealed:
    accounts: int
    secrets: int


async def sealed_with_retired_key(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            """SELECT (SELECT count(*) FROM users WHERE email_ct LIKE 'dev:%')
                    + (SELECT count(*) FROM user_secrets WHERE ciphertext LIKE 'dev:%')"""
        )
    )


async def reseal(conn: asyncpg.Connection, keyring: Keyring) -> Resealed:
    """Move every row under the retired key to `keyring`, in one transaction."""
    if RETIRED_KEY_ID in keyring.keys:
        raise ValueError("the active keyring still holds the retired development key")
    old = retired_ring()
    async with conn.transaction():
        users = await conn.fetch(
            "SELECT id, email_ct FROM users WHERE email_ct LIKE 'dev:%' FOR UPDATE"
        )
        for row in users:
            email = old.decrypt(row["email_ct"], email_context(row["id"]))
            await conn.execute(
                "UPDATE users SET email_ct = $2, email_index = $3 WHERE id = $1",
                row["id"],
                keyring.encrypt(email, email_context(row["id"])),
                keyring.blind_index(email),
            )
        stored = await conn.fetch(
            """SELECT user_id, name, ciphertext FROM user_secrets
               WHERE ciphertext LIKE 'dev:%' FOR UPDATE"""
        )
        for row in stored:
            context = secret_context(row["user_id"], row["name"])
            await conn.execute(
                "UPDATE user_secrets SET ciphertext = $3 WHERE user_id = $1 AND name = $2",
                row["user_id"],
                row["name"],
                keyring.encrypt(old.decrypt(row["ciphertext"], context), context),
            )
    return Resealed(len(users), len(stored))
