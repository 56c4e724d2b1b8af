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

from api.db.users import UserRepository, UserSecretRepository
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
    users, secrets = UserRepository(conn), UserSecretRepository(conn)
    return await users.count_sealed_with(RETIRED_KEY_ID) + await secrets.count_sealed_with(
        RETIRED_KEY_ID
    )


async def reseal(conn: asyncpg.Connection, keyring: Keyring) -> Resealed:
    """Move every row under the retired key to `keyring`, in one transaction: the same walk as
    key rotation (`pipelines.security_cli.rotate_fields`), plus the e-mails' new blind index."""
    if RETIRED_KEY_ID in keyring.keys:
        raise ValueError("the active keyring still holds the retired development key")
    old = retired_ring()
    users, secrets = UserRepository(conn), UserSecretRepository(conn)
    accounts = stored = 0
    async with conn.transaction():
        for user_id, email_ct in await users.email_ciphertexts():
            if old.key_id(email_ct) != RETIRED_KEY_ID:
                continue
            email = old.decrypt(email_ct, email_context(user_id))
            sealed = keyring.encrypt(email, email_context(user_id))
            await users.set_email_ciphertext(user_id, sealed, keyring.blind_index(email))
            accounts += 1
        for user_id, name, ciphertext in await secrets.ciphertexts():
            if old.key_id(ciphertext) != RETIRED_KEY_ID:
                continue
            context = secret_context(user_id, name)
            await secrets.set_ciphertext(
                user_id, name, keyring.encrypt(old.decrypt(ciphertext, context), context)
            )
            stored += 1
    return Resealed(accounts, stored)
