"""Accounts and credentials: registration, login with lockout, refresh-token rotation with reuse
detection, sessions, API keys, and who is calling (`Principal`).

Sessions live in Postgres (the record); Redis (`session:<id>`) caches each live one, with its
user and that user's role, for `SESSION_CACHE_S` (a setting), so most requests check a session
without touching Postgres. An access token names its user (`sub`) and session (`sid`); it is
honoured only while that session is live *and belongs to that user*, and the caller's role is the
one the record (or its cache) holds, never a claim, so a token signed with a leaked key still
cannot borrow another user's session or make itself an administrator, and a demoted
administrator loses the role within one cache period.

Logging out revokes the record and drops the cached entry: access tokens end at once. A session
Redis does not hold is looked up in the record (and cached again), and an unreachable Redis leaves
every check to the record, so sign-in, sign-out and token checks keep working through a Redis
outage and after one. The one gap: a session ended while Redis was unreachable stays cached until
its entry expires, at most `SESSION_CACHE_S` after it was last cached, should Redis return before
then.

Password guessing is throttled three ways (see `login`): attempts per address (the `auth` rate
tier) and per target account, whatever credentials come with the request; failures per (account,
address) pair, which lock that pair out for a doubling time; and failures per account from all
addresses, whose much higher hourly ceiling stops a distributed guess. A stranger elsewhere can
therefore not lock a user out, short of a distributed attack above the ceiling.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from email_validator import EmailNotValidError, validate_email
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.db.users import (
    ApiKeyRepository,
    ApiKeyRow,
    OneTimeTokenRepository,
    SecurityEventRepository,
    SessionRepository,
    SessionRow,
    UserRepository,
    UserRow,
)
from api.errors import ProblemError, Unprocessable
from api.security.access import SCOPES, granted_by
from api.security.crypto import Keyring, email_context, token_hash
from api.security.mail import AccountEmail, EmailSender
from api.security.ratelimit import Limit, RateLimiter
from api.security.tokens import (
    API_KEY_PREFIX,
    InvalidToken,
    decode_access_token,
    hash_password,
    issue_access_token,
    new_api_key,
    new_secret,
    password_problem,
    verify_password,
)
from api.settings import Settings

log = structlog.get_logger(__name__)

ROLES = ("user", "admin")
MAX_LOCKOUT_S = 3600
ACCOUNT_WINDOW_S = 3600  # the account-wide failure ceiling counts over this window
LOGIN_ACCOUNT_FACTOR = 5  # attempts per minute on one account, as a multiple of the auth tier
VERIFY_TTL = timedelta(days=2)
RESET_TTL = timedelta(hours=1)


def unauthorized(detail: str = "a valid access token or API key is required") -> ProblemError:
    return ProblemError(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, through an access token (every scope) or an API key (its scopes)."""

    user_id: uuid.UUID
    role: str
    scopes: frozenset[str] | None  # None: an access token, which carries every scope
    session_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None

    def allows(self, scope: str) -> bool:
        return self.scopes is None or scope in granted_by(self.scopes)

    @property
    def has_session(self) -> bool:
        return self.session_id is not None and self.api_key_id is None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: uuid.UUID
    token_type: str = "bearer"  # noqa: S105 - the OAuth 2 token type, not a secret


def normalise_email(raw: str) -> str:
    try:
        return validate_email(raw, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise Unprocessable("invalid_email", str(exc)) from exc


async def create_account(
    users: UserRepository,
    keyring: Keyring,
    address: str,
    display_name: str,
    password_hash: str | None,
) -> UserRow:
    """Store a new account (e-mail encrypted and blind-indexed); 409 if the address is taken.
    Without a password hash the account signs in only through a provider (or a reset link)."""
    user_id = uuid.uuid4()
    user = await users.create(
        user_id,
        keyring.encrypt(address, email_context(user_id)),
        keyring.blind_index(address),
        password_hash,
        display_name,
    )
    if user is None:
        raise ProblemError(409, "email_taken", "an account with this e-mail already exists")
    return user


class AuthService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis | None,
        settings: Settings,
        keyring: Keyring,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._settings = settings
        self._keyring = keyring
        self._limiter = limiter
        self._users = UserRepository(pool)
        self._sessions = SessionRepository(pool)
        self._keys = ApiKeyRepository(pool)
        self._events = SecurityEventRepository(pool)

    # ------------------------------------------------------------------ helpers

    def email_of(self, user: UserRow) -> str:
        return self._keyring.decrypt(user.email_ct, email_context(user.id))

    def ip_hash(self, ip: str | None) -> str | None:
        return self._keyring.blind_index(f"ip:{ip}")[:32] if ip else None

    async def audit(
        self, event: str, user_id: uuid.UUID | None, ip: str | None, **detail: Any
    ) -> None:
        await self._events.record(event, user_id, self.ip_hash(ip), detail)

    async def _redis_call(self, action: str, call: Any) -> Any:
        if self._redis is None:
            return None
        try:
            return await call
        except (RedisError, OSError) as exc:
            log.warning("auth_redis_unavailable", action=action, error=type(exc).__name__)
            return None

    # ------------------------------------------------------------------ accounts

    async def register(
        self, email: str, password: str, display_name: str, ip: str | None
    ) -> UserRow:
        address = normalise_email(email)
        problem = password_problem(password, address)
        if problem:
            raise Unprocessable("weak_password", problem)
        user = await create_account(
            UserRepository(self._pool),
            self._keyring,
            address,
            display_name,
            await hash_password(password),
        )
        await self.audit("register", user.id, ip)
        return user

    async def login(self, email: str, password: str, user_agent: str, ip: str | None) -> TokenPair:
        try:
            address = normalise_email(email)
        except ProblemError:
            raise unauthorized("wrong e-mail or password") from None
        index = self._keyring.blind_index(address)
        await self._spend_account_budget(index)
        guard = await self._unlocked_guard(index, ip, None)
        user = await self._users.by_email_index(index)
        stored = user.password_hash if user else None
        ok, rehash = await verify_password(password, stored)
        if user is None or not ok:
            await guard.failed()
            await self.audit("login_failed", user.id if user else None, ip)
            raise unauthorized("wrong e-mail or password")
        if rehash:
            await self._users.set_password(user.id, rehash)
        await guard.succeeded()
        return await self.start_session(user, user_agent, ip)

    async def _unlocked_guard(
        self, index: str, ip: str | None, user_id: uuid.UUID | None
    ) -> LoginGuard:
        """The failure bookkeeping of password attempts on this account from this address;
        429 `account_locked` (audited) while either is locked out."""
        guard = LoginGuard(self._redis_call, self._redis, self._settings, index, self.ip_hash(ip))
        locked_for = await guard.locked_for()
        if locked_for > 0:
            await self.audit("login_locked", user_id, ip)
            raise ProblemError(
                429,
                "account_locked",
                "too many failed logins; try again later",
                headers={"Retry-After": str(locked_for)},
            )
        return guard

    async def _spend_account_budget(self, index: str) -> None:
        """Attempts on one account, from anywhere (the address budget is the router's)."""
        if self._limiter is None:
            return
        per_min = self._settings.rate_limit_auth_per_min * LOGIN_ACCOUNT_FACTOR
        decision = await self._limiter.hit(Limit("login-account", per_min, 60.0), index)
        if not decision.allowed:
            raise ProblemError(
                429,
                "rate_limited",
                "too many sign-in attempts on this account; retry later",
                headers=decision.headers(),
            )

    # ------------------------------------------------------------------ sessions and tokens

    async def start_session(
        self, user: UserRow, user_agent: str, ip: str | None, via: str = "password"
    ) -> TokenPair:
        """A new sign-in (session and token pair) for an authenticated user."""
        pair = await self._start_session(user, user_agent)
        await self.audit("login", user.id, ip, session=str(pair.session_id), via=via)
        return pair

    async def _start_session(self, user: UserRow, user_agent: str) -> TokenPair:
        session_id = uuid.uuid4()
        refresh = new_secret()
        ttl = self._settings.refresh_token_ttl_s
        expires = datetime.now(UTC) + timedelta(seconds=ttl)
        await self._sessions.create(session_id, user.id, token_hash(refresh), expires, user_agent)
        await self._cache_session(session_id, user.id, user.role)
        return self._pair(user.id, session_id, refresh)

    async def _cache_session(self, session_id: uuid.UUID, user_id: uuid.UUID, role: str) -> None:
        entry = json.dumps({"user": str(user_id), "role": role})
        await self._redis_call(
            "session_live",
            self._redis.set(f"session:{session_id}", entry, ex=self._settings.session_cache_s),
        )

    def _pair(self, user_id: uuid.UUID, session_id: uuid.UUID, refresh: str) -> TokenPair:
        ttl = self._settings.access_token_ttl_s
        access = issue_access_token(self._settings.signing_key, user_id, session_id, ttl)
        return TokenPair(access, refresh, ttl, session_id)

    async def refresh(self, refresh_token: str, ip: str | None) -> TokenPair:
        """Rotate: the presented token is spent and a new one issued in the same session. A spent
        token presented again means it leaked; the whole session is revoked."""
        async with self._pool.acquire() as conn, conn.transaction():
            sessions = SessionRepository(conn)
            row = await sessions.token(token_hash(refresh_token))
            if row is None:
                raise unauthorized("unknown refresh token")
            now = datetime.now(UTC)
            if row["used_at"] is not None:
                await sessions.revoke(row["session_id"], "refresh token reuse")
                reused = (row["user_id"], row["session_id"])
            elif row["revoked_at"] is not None or row["expires_at"] <= now:
                raise unauthorized("session has ended; log in again")
            else:
                reused = None
                new = new_secret()
                await sessions.rotate(row["token_hash"], token_hash(new), row["session_id"])
        if reused is not None:
            await self.forget_session(reused[1])
            await self.audit("refresh_token_reuse", reused[0], ip, session=str(reused[1]))
            raise unauthorized("refresh token was already used; the session has been revoked")
        return self._pair(row["user_id"], row["session_id"], new)

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    async def forget_session(self, session_id: uuid.UUID) -> None:
        await self._redis_call("session_end", self._redis.delete(f"session:{session_id}"))

    async def logout(self, principal: Principal, ip: str | None) -> None:
        assert principal.session_id is not None  # the route admits signed-in sessions only
        await self.end_session(principal.user_id, principal.session_id, ip, "logout")

    async def end_session(
        self, user_id: uuid.UUID, session_id: uuid.UUID, ip: str | None, reason: str
    ) -> None:
        session = await self._sessions.get(session_id)
        if session is None or session.user_id != user_id:  # someone else's: as if absent
            raise ProblemError(404, "session_not_found", "no such session")
        await self._sessions.revoke(session_id, reason)
        await self.forget_session(session_id)
        await self.audit("session_ended", user_id, ip, session=str(session_id), reason=reason)

    async def end_all_sessions(
        self, user_id: uuid.UUID, ip: str | None, reason: str, keep: uuid.UUID | None = None
    ) -> int:
        ended = await self._sessions.revoke_all(user_id, reason, keep)
        for session_id in ended:
            await self.forget_session(session_id)
        await self.audit("sessions_ended", user_id, ip, count=len(ended), reason=reason)
        return len(ended)

    async def sessions(self, user_id: uuid.UUID) -> list[SessionRow]:
        return await self._sessions.active(user_id)

    async def _session_holder(self, session_id: uuid.UUID) -> tuple[uuid.UUID, str] | None:
        """(user, role) of a live session: from its Redis entry, or else from the record (and
        then cached again). None when the session is not live."""
        cached = await self._redis_call("session_check", self._redis.get(f"session:{session_id}"))
        holder = _cached_holder(cached)
        if holder is not None:
            return holder
        holder = await self._sessions.live_holder(session_id)
        if holder is not None and self._redis is not None:
            await self._cache_session(session_id, *holder)
        return holder

    # ------------------------------------------------------------------ who is calling

    async def principal_from_token(self, token: str) -> Principal:
        try:
            claims = decode_access_token(self._settings.signing_key, token)
        except InvalidToken as exc:
            raise unauthorized(str(exc)) from exc
        holder = await self._session_holder(claims.session_id)
        if holder is None or holder[0] != claims.user_id:  # ended, or someone else's session
            raise unauthorized("session has ended; log in again")
        return Principal(claims.user_id, holder[1], None, session_id=claims.session_id)

    async def principal_from_api_key(self, key: str) -> Principal:
        if not key.startswith(API_KEY_PREFIX) or len(key) > 200:
            raise unauthorized("invalid API key")
        row = await self._keys.authenticate(token_hash(key))
        if row is None:
            raise unauthorized("invalid, expired or revoked API key")
        user = await self._users.get(row.user_id)
        if user is None:
            raise unauthorized("invalid API key")
        return Principal(user.id, user.role, frozenset(row.scopes), api_key_id=row.id)

    # ------------------------------------------------------------------ e-mail and password

    async def request_verification(self, user: UserRow, sender: EmailSender) -> None:
        if user.email_verified_at is not None:
            raise ProblemError(409, "already_verified", "this e-mail address is already verified")
        await self._send_token(user, "verify_email", VERIFY_TTL, sender)

    async def verify_email(self, token: str, ip: str | None) -> None:
        user_id = await OneTimeTokenRepository(self._pool).consume(
            token_hash(token), "verify_email"
        )
        if user_id is None:
            raise ProblemError(400, "invalid_token", "the link is invalid, used or expired")
        await self._users.mark_email_verified(user_id)
        await self.audit("email_verified", user_id, ip)

    async def request_password_reset(self, email: str, sender: EmailSender, ip: str | None) -> None:
        """Send a reset link if the account exists; the answer is the same either way, so the
        endpoint does not reveal who has an account."""
        try:
            address = normalise_email(email)
        except ProblemError:
            return
        user = await self._users.by_email_index(self._keyring.blind_index(address))
        if user is not None:
            await self._send_token(user, "reset_password", RESET_TTL, sender)
            await self.audit("password_reset_requested", user.id, ip)

    async def reset_password(self, token: str, password: str, ip: str | None) -> None:
        """Set a new password with a reset token; every session of the account ends."""
        async with self._pool.acquire() as conn, conn.transaction():
            user_id = await OneTimeTokenRepository(conn).consume(
                token_hash(token), "reset_password"
            )
            if user_id is None:
                raise ProblemError(400, "invalid_token", "the link is invalid, used or expired")
            user = await UserRepository(conn).get(user_id)
            assert user is not None
            problem = password_problem(password, self.email_of(user))
            if problem:
                raise Unprocessable("weak_password", problem)  # rolls back: the token stays
            new_hash = await hash_password(password)
            await UserRepository(conn).set_password(user_id, new_hash)
        await self.end_all_sessions(user_id, ip, "password reset")
        await self.audit("password_reset", user_id, ip)

    async def change_password(
        self, principal: Principal, current: str, new: str, ip: str | None
    ) -> int:
        """Replace the password after checking the current one; every other session ends (this
        one stays). Wrong guesses count like failed logins, so a borrowed session cannot test
        passwords at the general rate. The number of sessions ended."""
        user = await self._users.get(principal.user_id)
        if user is None:
            raise unauthorized("this account no longer exists")
        if user.password_hash is None:
            raise ProblemError(
                409,
                "no_password",
                "this account signs in through a provider; set a password with a reset link",
            )
        guard = await self._unlocked_guard(user.email_index, ip, user.id)
        if not (await verify_password(current, user.password_hash))[0]:
            await guard.failed()
            await self.audit("password_change_failed", user.id, ip)
            raise ProblemError(403, "wrong_password", "the current password is not right")
        problem = password_problem(new, self.email_of(user))
        if problem:
            raise Unprocessable("weak_password", problem)
        await self._users.set_password(user.id, await hash_password(new))
        ended = await self.end_all_sessions(
            user.id, ip, "password changed", keep=principal.session_id
        )
        await self.audit("password_changed", user.id, ip)
        return ended

    async def _send_token(
        self, user: UserRow, purpose: str, ttl: timedelta, sender: EmailSender
    ) -> None:
        secret = new_secret()
        await OneTimeTokenRepository(self._pool).create(
            token_hash(secret), user.id, purpose, datetime.now(UTC) + ttl
        )
        await sender.send(AccountEmail(self.email_of(user), purpose, secret))

    # ------------------------------------------------------------------ API keys

    async def create_api_key(
        self,
        user_id: uuid.UUID,
        name: str,
        scopes: list[str],
        expires_at: datetime | None,
        ip: str | None,
    ) -> tuple[ApiKeyRow, str]:
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise Unprocessable(
                "invalid_scopes", f"scopes must be a non-empty subset of {', '.join(SCOPES)}"
            )
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise Unprocessable("invalid_expiry", "expires_at must be in the future")
        key, prefix = new_api_key()
        row = await self._keys.create(
            uuid.uuid4(), user_id, name, prefix, token_hash(key), sorted(set(scopes)), expires_at
        )
        await self.audit("api_key_created", user_id, ip, key=prefix, scopes=row.scopes)
        return row, key

    async def api_keys(self, user_id: uuid.UUID) -> list[ApiKeyRow]:
        return await self._keys.of_user(user_id)

    async def revoke_api_key(self, user_id: uuid.UUID, key_id: uuid.UUID, ip: str | None) -> None:
        if not await self._keys.revoke(user_id, key_id):
            raise ProblemError(404, "api_key_not_found", "no such API key")
        await self.audit("api_key_revoked", user_id, ip, key_id=str(key_id))


def _cached_holder(entry: str | None) -> tuple[uuid.UUID, str] | None:
    """A session cache entry (`{"user": ..., "role": ...}`); entries of an older format, or
    unreadable ones, count as absent, so the record decides."""
    if not entry:
        return None
    try:
        found = json.loads(entry)
        return uuid.UUID(found["user"]), str(found["role"])
    except (ValueError, KeyError, TypeError):
        return None


class LoginGuard:
    """The failure bookkeeping of password logins to one account from one address (module
    docstring). Without Redis nothing is counted, and the `auth` rate tier's per-process
    fallback still bounds the guessing."""

    def __init__(
        self,
        call: Callable[[str, Awaitable[Any]], Awaitable[Any]],
        redis: Redis | None,
        settings: Settings,
        account: str,
        address: str | None,
    ) -> None:
        self._call = call
        self._redis = redis
        self._settings = settings
        self._pair = f"fail:{account}:{address or '-'}"
        self._pair_lock = f"lock:{account}:{address or '-'}"
        self._account = f"fail-account:{account}"
        self._account_lock = f"lock-account:{account}"

    async def locked_for(self) -> int:
        """Seconds this pair (or the whole account) stays locked; 0 when it is not."""
        if self._redis is None:
            return 0
        ttls = await self._call(
            "lockout_check", _ttls(self._redis, [self._pair_lock, self._account_lock])
        )
        return max((int(t) for t in ttls or () if t and t > 0), default=0)

    async def failed(self) -> None:
        """Count the failure; from the Nth on, lock the pair for a doubling time, and the
        account once all addresses together pass the ceiling."""
        if self._redis is None:
            return
        counts = await self._call("lockout_count", self._count())
        if counts is None:
            return
        pair, account = counts
        settings = self._settings
        over = pair - settings.login_lockout_after
        if over >= 0:
            seconds = min(MAX_LOCKOUT_S, settings.login_lockout_base_s * 2**over)
            await self._call("lockout_set", self._redis.set(self._pair_lock, 1, ex=seconds))
        if account >= settings.login_account_ceiling:
            ttl = await self._call("lockout_window", self._redis.ttl(self._account))
            seconds = int(ttl) if ttl and ttl > 0 else ACCOUNT_WINDOW_S
            await self._call("lockout_set", self._redis.set(self._account_lock, 1, ex=seconds))

    async def succeeded(self) -> None:
        if self._redis is not None:
            await self._call("login_reset", self._redis.delete(self._pair, self._pair_lock))

    async def _count(self) -> tuple[int, int]:
        assert self._redis is not None
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(self._pair)
            pipe.expire(self._pair, 86_400)
            pipe.set(self._account, 0, ex=ACCOUNT_WINDOW_S, nx=True)  # the window opens once
            pipe.incr(self._account)  # INCR keeps the window's expiry
            pair, _, _, account = await pipe.execute()
        return int(pair), int(account)


async def _ttls(redis: Redis, keys: list[str]) -> list[int]:
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.ttl(key)
        return [int(t) for t in await pipe.execute()]
