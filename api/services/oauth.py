"""Social and OIDC sign-in: the authorization-code flow with PKCE and a single-use state.

1. `authorize_url` makes a random `state` and PKCE verifier, keeps them in Redis for ten minutes
   under the state, and sends the browser to the provider with the S256 challenge.
2. `complete` takes the state back exactly once (GETDEL), exchanges the code together with the
   verifier (Authlib's httpx client), reads the account's profile and requires a *verified*
   e-mail address.
3. The provider account is matched by (provider, subject); on first sign-in it is linked to the
   user holding the same verified address, or a new account is created. Then a session starts,
   exactly as after a password login.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.db.oauth import OAuthIdentityRepository
from api.db.users import UserRepository, UserRow
from api.errors import ProblemError
from api.security.crypto import Keyring
from api.services.auth import AuthService, TokenPair, create_account, normalise_email
from api.settings import OAuthProvider, Settings

STATE_TTL_S = 600
HTTP_TIMEOUT_S = 10.0
PRESETS: dict[str, dict[str, str]] = {
    "github": {
        "authorize_url": "https://github.com/login/oauth/authorize",
        "token_url": "https://github.com/login/oauth/access_token",
        "userinfo_url": "https://api.github.com/user",
        "emails_url": "https://api.github.com/user/emails",
        "scope": "read:user user:email",
    },
    "google": {
        "server_metadata_url": "https://accounts.google.com/.well-known/openid-configuration",
        "scope": "openid email profile",
    },
}


@dataclass(frozen=True)
class Endpoints:
    authorize_url: str
    token_url: str
    userinfo_url: str
    emails_url: str | None
    scope: str


@dataclass(frozen=True)
class ProviderAccount:
    subject: str
    email: str
    display_name: str


def _bad(code: str, detail: str, status: int = 400) -> ProblemError:
    return ProblemError(status, code, detail)


class OAuthService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        settings: Settings,
        keyring: Keyring,
        auth: AuthService,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._settings = settings
        self._keyring = keyring
        self._auth = auth

    def _provider(self, name: str) -> OAuthProvider:
        provider = self._settings.oauth_providers.get(name)
        if provider is None:
            raise ProblemError(404, "provider_not_found", f"no sign-in provider {name!r}")
        return provider

    def redirect_uri(self, name: str) -> str:
        return f"{self._settings.public_url.rstrip('/')}/api/v1/auth/oauth/{name}/callback"

    async def _endpoints(self, name: str, provider: OAuthProvider) -> Endpoints:
        raw = {**PRESETS.get(name, {}), **provider.model_dump(exclude_none=True)}
        if "server_metadata_url" in raw:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
                response = await client.get(raw["server_metadata_url"])
            if response.status_code != 200:
                raise _bad("provider_unavailable", f"{name} discovery failed", 502)
            meta = response.json()
            raw.setdefault("authorize_url", meta["authorization_endpoint"])
            raw.setdefault("token_url", meta["token_endpoint"])
            raw.setdefault("userinfo_url", meta["userinfo_endpoint"])
        missing = [k for k in ("authorize_url", "token_url", "userinfo_url") if k not in raw]
        if missing:
            raise _bad("provider_misconfigured", f"{name} lacks {', '.join(missing)}", 500)
        return Endpoints(
            raw["authorize_url"],
            raw["token_url"],
            raw["userinfo_url"],
            raw.get("emails_url"),
            raw.get("scope", provider.scope),
        )

    def _client(self, name: str, provider: OAuthProvider, scope: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=provider.client_id,
            client_secret=provider.client_secret.get_secret_value(),
            scope=scope,
            redirect_uri=self.redirect_uri(name),
            code_challenge_method="S256",
            timeout=HTTP_TIMEOUT_S,
        )

    async def authorize_url(self, name: str) -> str:
        provider = self._provider(name)
        endpoints = await self._endpoints(name, provider)
        state = secrets.token_urlsafe(32)
        verifier = generate_token(64)
        try:
            await self._redis.set(
                f"oauth:{state}",
                json.dumps({"provider": name, "verifier": verifier}),
                ex=STATE_TTL_S,
            )
        except (RedisError, OSError) as exc:
            raise _bad("oauth_unavailable", "social sign-in is unavailable right now", 503) from exc
        async with self._client(name, provider, endpoints.scope) as client:
            url, _ = client.create_authorization_url(
                endpoints.authorize_url, state=state, code_verifier=verifier
            )
        return url

    async def complete(
        self, name: str, code: str, state: str, user_agent: str, ip: str | None
    ) -> TokenPair:
        provider = self._provider(name)
        try:
            saved = await self._redis.getdel(f"oauth:{state}")  # single use
        except (RedisError, OSError) as exc:
            raise _bad("oauth_unavailable", "social sign-in is unavailable right now", 503) from exc
        if saved is None:
            raise _bad("invalid_state", "unknown or expired sign-in attempt; start again")
        flow = json.loads(saved)
        if flow["provider"] != name:
            raise _bad("invalid_state", "this sign-in was started with another provider")
        endpoints = await self._endpoints(name, provider)
        account = await self._account(name, provider, endpoints, code, flow["verifier"])
        user = await self._user_for(name, account, ip)
        return await self._auth.start_session(user, user_agent, ip, via=name)

    async def _account(
        self,
        name: str,
        provider: OAuthProvider,
        endpoints: Endpoints,
        code: str,
        verifier: str,
    ) -> ProviderAccount:
        async with self._client(name, provider, endpoints.scope) as client:
            try:
                await client.fetch_token(
                    endpoints.token_url,
                    code=code,
                    code_verifier=verifier,
                    redirect_uri=self.redirect_uri(name),
                )
            except Exception as exc:  # the provider refused the code (or is down)
                raise _bad("oauth_failed", f"{name} refused the sign-in: {exc}"[:300]) from exc
            profile = (await client.get(endpoints.userinfo_url)).json()
            emails: list[dict[str, Any]] = []
            if endpoints.emails_url:
                emails = (await client.get(endpoints.emails_url)).json()
        subject = str(profile.get("sub") or profile.get("id") or "")
        if not subject:
            raise _bad("oauth_failed", f"{name} did not identify the account")
        email = _verified_email(profile, emails)
        if email is None:
            raise _bad(
                "email_not_verified",
                f"{name} has no verified e-mail address for this account",
                403,
            )
        display = str(profile.get("name") or profile.get("login") or email.split("@")[0])
        return ProviderAccount(subject, normalise_email(email), display[:80])

    async def _user_for(self, name: str, account: ProviderAccount, ip: str | None) -> UserRow:
        """The linked user, else the one with this verified address (linked now), else new."""
        users = UserRepository(self._pool)
        async with self._pool.acquire() as conn, conn.transaction():
            identities = OAuthIdentityRepository(conn)
            linked = await identities.user_of(name, account.subject)
            if linked is not None:
                user = await UserRepository(conn).get(linked)
                assert user is not None
                return user
            user = await UserRepository(conn).by_email_index(
                self._keyring.blind_index(account.email)
            )
            event = "oauth_linked"
            if user is None:  # no password: this account signs in through the provider
                user = await create_account(
                    UserRepository(conn), self._keyring, account.email, account.display_name, None
                )
                event = "oauth_registered"
            await identities.link(name, account.subject, user.id)
            if user.email_verified_at is None:  # the provider vouched for the address
                await UserRepository(conn).mark_email_verified(user.id, datetime.now(UTC))
        await self._auth.audit(event, user.id, ip, provider=name)
        return await users.get(user.id) or user


def _verified_email(profile: dict[str, Any], emails: list[dict[str, Any]]) -> str | None:
    """The account's verified address: OIDC `email` + `email_verified`, or the primary verified
    entry of a GitHub-style address list."""
    if profile.get("email") and profile.get("email_verified") is True:
        return str(profile["email"])
    verified = [e for e in emails if e.get("verified") and e.get("email")]
    primary = [e for e in verified if e.get("primary")]
    chosen = (primary or verified)[:1]
    return str(chosen[0]["email"]) if chosen else None
