"""Access tokens (short-lived JWTs), opaque secrets, and the password policy and hashing.

Access tokens are HS256 JWTs with the algorithm pinned on decode (so `alg=none` and algorithm
confusion are refused), issuer and audience checked, and `exp`, `iat`, `sub`, `sid` and `jti`
required. The session id (`sid`) ties a token to its sign-in, so ending the session ends the
token before it expires. A token carries no role or scopes: who may do what is read on the server
side, from the session record (api.services.auth), never believed from a claim. Refresh tokens,
API keys and one-time tokens are opaque random strings stored only as hashes (see
api.security.crypto.token_hash).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt
from pwdlib import PasswordHash

ALGORITHM = "HS256"
ISSUER = "stock-copilot"
AUDIENCE = "stock-copilot-api"
API_KEY_PREFIX = "sck_"

_hasher = PasswordHash.recommended()  # argon2id with the library's current parameters
# A handful of the most common passwords; length does most of the work (NIST SP 800-63B).
_COMMON = frozenset(
    {
        "password1234",
        "123456789012",
        "qwertyuiop12",
        "passwordpassword",
        "letmein12345",
        "iloveyou1234",
        "administrator",
        "welcome12345",
    }
)
MIN_PASSWORD = 12
MAX_PASSWORD = 256


class InvalidToken(ValueError):
    """The token is malformed, expired, signed with another key or algorithm, or not ours."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: int


def issue_access_token(key: str, user_id: uuid.UUID, session_id: uuid.UUID, ttl_s: int) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(user_id),
        "sid": str(session_id),
        "iat": now,
        "exp": now + ttl_s,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def decode_access_token(key: str, token: str) -> AccessClaims:
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],  # pinned: never taken from the token's header
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "sid", "jti", "iss", "aud"]},
        )
        return AccessClaims(uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"]), int(claims["exp"]))
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("access token has expired; refresh it") from exc
    except (jwt.PyJWTError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # the library's own message names its internals; the caller learns only that it failed
        raise InvalidToken("invalid access token") from exc


def new_secret() -> str:
    """256 bits of randomness, URL-safe."""
    return secrets.token_urlsafe(32)


def new_api_key() -> tuple[str, str]:
    """(the full key shown once, its visible prefix used to list and identify it)."""
    visible = API_KEY_PREFIX + secrets.token_hex(4)
    return f"{visible}_{secrets.token_urlsafe(32)}", visible


def password_problem(password: str, email: str) -> str | None:
    """Why this password is refused, or None: length, not the e-mail, not a common one."""
    if len(password) < MIN_PASSWORD:
        return f"password must have at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"password must have at most {MAX_PASSWORD} characters"
    lowered = password.lower()
    local = email.split("@", 1)[0].lower()
    if lowered in _COMMON or len(set(password)) < 4:
        return "password is too common or repetitive"
    if len(local) >= 4 and local in lowered:
        return "password must not contain your e-mail address"
    return None


# argon2 spends about 0.1 s of CPU per call: both run in a worker thread, off the event loop.


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password: str, stored: str | None) -> tuple[bool, str | None]:
    """(matches, a re-hash to store when the parameters have moved on). Without a stored hash a
    dummy verification still runs, so timing does not reveal whether the account exists."""
    return await asyncio.to_thread(_verify, password, stored)


def _verify(password: str, stored: str | None) -> tuple[bool, str | None]:
    if stored is None:
        _hasher.verify(password, _DUMMY_HASH)
        return False, None
    try:
        return _hasher.verify_and_update(password, stored)
    except Exception:  # a malformed stored hash never lets anyone in
        return False, None


_DUMMY_HASH = _hasher.hash("stock-copilot dummy password for timing")
