"""/api/v1/auth: register, log in (JSON or the OAuth2 password form), refresh, log out.

Every route here spends the strict `auth` rate-limit tier per client address; logins are also
locked per account after repeated failures (see AuthService.login).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from api.db.users import UserRepository
from api.deps import (
    AuthDep,
    ClientIpDep,
    EmailSenderDep,
    OAuthDep,
    PoolDep,
    PrincipalDep,
    SettingsDep,
    rate_limited,
)
from api.errors import ProblemError, problems
from api.routers.users import UserOut, user_out
from api.services.auth import TokenPair

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], dependencies=[rate_limited("auth")])


class RegisterIn(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=256, description="at least 12 characters")
    display_name: str = Field(min_length=1, max_length=80)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "email": "jane@example.com",
                    "password": "correct horse battery staple",
                    "display_name": "Jane",
                }
            ]
        }
    }


class LoginIn(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=256)

    model_config = {
        "json_schema_extra": {
            "examples": [{"email": "jane@example.com", "password": "correct horse battery staple"}]
        }
    }


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=16, max_length=200)

    model_config = {
        "json_schema_extra": {"examples": [{"refresh_token": "q3Jx0q3nA6m2Zk1wYbQeM8vS4tL9pR7u"}]}
    }


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth 2 token type, not a secret
    expires_in: int = Field(description="seconds until the access token expires")

    @classmethod
    def of(cls, pair: TokenPair) -> TokenOut:
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires_in=pair.expires_in,
        )


def _agent(request: Request) -> str:
    return request.headers.get("user-agent", "")[:200]


@router.post("/register", response_model=UserOut, status_code=201, responses=problems(409))
async def register(body: RegisterIn, auth: AuthDep, ip: ClientIpDep) -> UserOut:
    """Create an account (e-mail stored encrypted, password hashed with argon2id)."""
    user = await auth.register(body.email, body.password, body.display_name, ip)
    return user_out(user, auth.email_of(user))


@router.post("/login", response_model=TokenOut)
async def login(body: LoginIn, auth: AuthDep, request: Request, ip: ClientIpDep) -> TokenOut:
    """Exchange e-mail and password for an access token and a refresh token."""
    return TokenOut.of(await auth.login(body.email, body.password, _agent(request), ip))


@router.post("/token", response_model=TokenOut)
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    auth: AuthDep,
    request: Request,
    ip: ClientIpDep,
) -> TokenOut:
    """The OAuth2 password flow (`username` is the e-mail), for the docs' Authorize button."""
    return TokenOut.of(await auth.login(form.username, form.password, _agent(request), ip))


@router.post("/refresh", response_model=TokenOut)
async def refresh(body: RefreshIn, auth: AuthDep, ip: ClientIpDep) -> TokenOut:
    """Trade a refresh token for a new pair; the old refresh token is spent. Presenting a spent
    one again revokes the whole session (it must have leaked)."""
    return TokenOut.of(await auth.refresh(body.refresh_token, ip))


class TokenIn(BaseModel):
    token: str = Field(min_length=16, max_length=200)

    model_config = {
        "json_schema_extra": {"examples": [{"token": "Hn3k9wQpX2m7Vb4tLr8sYc1zJd6fGa0e"}]}
    }


class ResetRequestIn(BaseModel):
    email: str = Field(max_length=254)

    model_config = {"json_schema_extra": {"examples": [{"email": "jane@example.com"}]}}


class ResetIn(BaseModel):
    token: str = Field(min_length=16, max_length=200)
    password: str = Field(max_length=256)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "token": "Hn3k9wQpX2m7Vb4tLr8sYc1zJd6fGa0e",
                    "password": "a brand new long passphrase",
                }
            ]
        }
    }


@router.post("/verify-email/request", status_code=202, responses=problems(409))
async def request_verification(
    principal: PrincipalDep, auth: AuthDep, pool: PoolDep, sender: EmailSenderDep
) -> None:
    """Send a verification link (single use, valid two days) to the account's address."""
    user = await UserRepository(pool).get(principal.user_id)
    if user is None:
        raise ProblemError(401, "unauthorized", "this account no longer exists")
    await auth.request_verification(user, sender)


@router.post("/verify-email", status_code=204, responses=problems(400))
async def verify_email(body: TokenIn, auth: AuthDep, ip: ClientIpDep) -> None:
    """Mark the address verified with the token from the link (single use)."""
    await auth.verify_email(body.token, ip)


@router.post("/password-reset/request", status_code=202)
async def request_password_reset(
    body: ResetRequestIn, auth: AuthDep, sender: EmailSenderDep, ip: ClientIpDep
) -> None:
    """Send a reset link (single use, valid one hour) if the account exists. The answer is the
    same either way, so it does not reveal who has an account."""
    await auth.request_password_reset(body.email, sender, ip)


@router.post("/password-reset", status_code=204, responses=problems(400))
async def reset_password(body: ResetIn, auth: AuthDep, ip: ClientIpDep) -> None:
    """Set a new password; every session of the account ends."""
    await auth.reset_password(body.token, body.password, ip)


@router.post("/logout", status_code=204, responses=problems(400))
async def logout(principal: PrincipalDep, auth: AuthDep, ip: ClientIpDep) -> None:
    """End this session: its refresh token and its access tokens stop working at once."""
    await auth.logout(principal, ip)


class ProvidersOut(BaseModel):
    providers: list[str]


@router.get("/oauth/providers", response_model=ProvidersOut)
async def oauth_providers(settings: SettingsDep) -> ProvidersOut:
    """Configured social / OIDC sign-in providers."""
    return ProvidersOut(providers=sorted(settings.oauth_providers))


@router.get(
    "/oauth/{provider}/authorize",
    status_code=307,
    response_class=RedirectResponse,
    responses=problems(502, 503),
)
async def oauth_authorize(provider: str, oauth: OAuthDep) -> RedirectResponse:
    """Start social sign-in: redirects to the provider (authorization code with PKCE)."""
    return RedirectResponse(await oauth.authorize_url(provider), status_code=307)


@router.get(
    "/oauth/{provider}/callback", response_model=TokenOut, responses=problems(400, 502, 503)
)
async def oauth_callback(
    provider: str,
    oauth: OAuthDep,
    request: Request,
    ip: ClientIpDep,
    code: Annotated[str, Query(min_length=1, max_length=2048)],
    state: Annotated[str, Query(min_length=16, max_length=200)],
) -> TokenOut:
    """Where the provider sends the browser back: checks the state, redeems the code with the
    PKCE verifier, links or creates the account by verified e-mail, and signs in."""
    return TokenOut.of(await oauth.complete(provider, code, state, _agent(request), ip))
