"""Field encryption at rest: AES-256-GCM with a keyring, and HMAC blind indexes for lookup.

A ciphertext is `<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`; the key id says which key of the
ring decrypts it, so keys rotate without a flag day (`stockcopilot keys rotate` re-encrypts every
field with the active key). Each field is bound to its context (e.g. `users.email:<user id>`) as
associated data, so a ciphertext copied into another row or column does not decrypt.

Equality lookups (log in by e-mail) use a blind index: HMAC-SHA256 of the normalised value under
a separate index key, which never rotates with the encryption keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from api.settings import Environment, Settings

NONCE_BYTES = 12


class DecryptionError(ValueError):
    """The ciphertext is malformed, tampered with, bound to another context, or its key is gone."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_key() -> str:
    """A new random 256-bit key, base64url, for the ENCRYPTION_KEYS setting."""
    return _b64(os.urandom(32))


@dataclass(frozen=True)
class Keyring:
    keys: dict[str, bytes]
    active: str
    index_key: bytes

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ValueError(f"active key id {self.active!r} is not in the keyring")
        for kid, key in {**self.keys, "blind index": self.index_key}.items():
            if len(key) != 32:
                raise ValueError(f"key {kid!r} must be 32 bytes (AES-256), got {len(key)}")
            if ":" in kid:
                raise ValueError(f"key id {kid!r} must not contain ':'")

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        """The configured ring. Keys come from the environment or, outside production, from the
        data folder's key file (`api.security.keyfile.with_secrets`); there is no default."""
        if settings.encryption_keys is None or settings.blind_index_key is None:
            where = (
                "must be set in production (generate keys with `stockcopilot keys generate`)"
                if settings.environment == Environment.PRODUCTION
                else "are not set; start through `stockcopilot`, which keeps generated keys in "
                "the data folder, or set them"
            )
            raise ValueError(f"ENCRYPTION_KEYS and BLIND_INDEX_KEY {where}")
        try:
            raw = json.loads(settings.encryption_keys.get_secret_value())
            keys = {str(kid): _unb64(str(value)) for kid, value in raw.items()}
        except (ValueError, AttributeError) as exc:
            raise ValueError('ENCRYPTION_KEYS must be JSON {"key id": "base64url key"}') from exc
        if not keys:
            raise ValueError("ENCRYPTION_KEYS holds no key")
        active = settings.encryption_active_key or max(keys)
        return cls(keys, active, _unb64(settings.blind_index_key.get_secret_value()))

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.active]).encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self.active}:{_b64(nonce + sealed)}"

    def decrypt(self, token: str, context: str) -> str:
        kid, sep, body = token.partition(":")
        if not sep or kid not in self.keys:
            raise DecryptionError(f"no key {kid!r} in the keyring")
        try:
            raw = _unb64(body)
            opened = AESGCM(self.keys[kid]).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()
            )
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("ciphertext does not decrypt in this context") from exc
        return opened.decode()

    def key_id(self, token: str) -> str:
        return token.partition(":")[0]

    def reencrypt(self, token: str, context: str) -> str | None:
        """The same plaintext under the active key, or None if it is already under it."""
        if self.key_id(token) == self.active:
            return None
        return self.encrypt(self.decrypt(token, context), context)

    def blind_index(self, value: str) -> str:
        """Deterministic HMAC of an already-normalised value (e.g. a lower-cased e-mail)."""
        return hmac.new(self.index_key, value.encode(), hashlib.sha256).hexdigest()

    def pseudonym(self, user_id: object) -> str:
        """A user's name in logs and error reports: stable, so one user's lines correlate,
        but without the key it leads back to no account."""
        return "u_" + self.blind_index(f"log:{user_id}")[:16]


def email_context(user_id: object) -> str:
    """The associated data binding a user's e-mail ciphertext to its row."""
    return f"users.email:{user_id}"


def secret_context(user_id: object, name: str) -> str:
    """The associated data binding a stored secret's ciphertext to its owner and name."""
    return f"user_secrets:{user_id}:{name}"


def token_hash(secret: str) -> str:
    """How refresh tokens, API keys and one-time tokens are stored: they are 256-bit random
    secrets, so a plain SHA-256 is enough (no slow hash needed, unlike passwords)."""
    return hashlib.sha256(secret.encode()).hexdigest()
