"""/api/v1/auth: register, log in (JSON or the OAuth2 password form), refresh, log out.

Every route here spends the strict `auth` rate-limit tier per client address, whatever
credentials come with the request; logins are also limited per target account and locked per
(account, address) after repeated failures (see AuthService.login). Everything but logging out
and asking for a verification link is public.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field

from api.deps import (
    AuthDep,
    ClientIpDep,
    EmailSenderDep,
    OAuthDep,
    PrincipalDep,
    SessionPrincipalDep,
    SettingsDep,
    rate_limited,
    require,
    require_scope,
)
from api.errors import problems
from api.routers.users import AccountsDep, UserOut, user_out
from api.schemas import RequestModel
from api.security.access import PUBLIC
from api.services.auth import TokenPair

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], dependencies=[rate_limited("auth")])
OPEN = [require(PUBLIC)]


class RegisterIn(RequestModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=256, description="at least 12 characters")
    display_name: str = Field(min_length=1, max_length=80)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "jane@example.com",
                    "password": "correct horse battery staple",
                    "display_name": "Jane",
                }
            ]
        }
    )


class LoginIn(RequestModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=256)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "jane@example.com", "password": "correct horse battery staple"}]
        }
    )


class RefreshIn(RequestModel):
    refresh_token: str = Field(min_length=16, max_length=200)

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"refresh_token": "q3Jx0q3nA6m2Zk1wYbQeM8vS4tL9pR7u"}]}
    )


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


@router.post(
    "/register", dependencies=OPEN, response_model=UserOut, status_code=201, responses=problems(409)
)
async def register(body: RegisterIn, auth: AuthDep, ip: ClientIpDep) -> UserOut:
    """Create an account (e-mail stored encrypted, password hashed with argon2id)."""
    user = await auth.register(body.email, body.password, body.display_name, ip)
    return user_out(user, auth.email_of(user))


@router.post("/login", dependencies=OPEN, response_model=TokenOut, responses=problems(401))
async def login(body: LoginIn, auth: AuthDep, request: Request, ip: ClientIpDep) -> TokenOut:
    """Exchange e-mail and password for an access token and a refresh token."""
    return TokenOut.of(await auth.login(body.email, body.password, _agent(request), ip))


@router.post("/token", dependencies=OPEN, response_model=TokenOut, responses=problems(401))
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    auth: AuthDep,
    request: Request,
    ip: ClientIpDep,
) -> TokenOut:
    """The OAuth2 password flow (`username` is the e-mail), for the docs' Authorize button."""
    return TokenOut.of(await auth.login(form.username, form.password, _agent(request), ip))


@router.post("/refresh", dependencies=OPEN, response_model=TokenOut, responses=problems(401))
async def refresh(body: RefreshIn, auth: AuthDep, ip: ClientIpDep) -> TokenOut:
    """Trade a refresh token for a new pair; the old refresh token is spent. Presenting a spent
    one again revokes the whole session (it must have leaked)."""
    return TokenOut.of(await auth.refresh(body.refresh_token, ip))


class TokenIn(RequestModel):
    token: str = Field(min_length=16, max_length=200)

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"token": "Hn3k9wQpX2m7Vb4tLr8sYc1zJd6fGa0e"}]}
    )


class ResetRequestIn(RequestModel):
    email: str = Field(max_length=254)

    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "jane@example.com"}]})


class ResetIn(RequestModel):
    token: str = Field(min_length=16, max_length=200)
    password: str = Field(max_length=256)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "token": "Hn3k9wQpX2m7Vb4tLr8sYc1zJd6fGa0e",
                    "password": "a brand new long passphrase",
                }
            ]
        }
    )


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    detail: str


@router.post(
    "/verify-email/request",
    dependencies=[require_scope("write:account")],
    response_model=Accepted,
    status_code=202,
    responses=problems(409),
)
async def request_verification(
    principal: PrincipalDep, auth: AuthDep, accounts: AccountsDep, sender: EmailSenderDep
) -> Accepted:
    """Send a verification link (single use, valid two days) to the account's address."""
    await auth.request_verification(await accounts.me(principal.user_id), sender)
    return Accepted(detail="a verification link is on its way to your address")


@router.post("/verify-email", dependencies=OPEN, status_code=204, responses=problems(400))
async def verify_email(body: TokenIn, auth: AuthDep, ip: ClientIpDep) -> None:
    """Mark the address verified with the token from the link (single use)."""
    await auth.verify_email(body.token, ip)


@router.post("/password-reset/request", dependencies=OPEN, response_model=Accepted, status_code=202)
async def request_password_reset(
    body: ResetRequestIn, auth: AuthDep, sender: EmailSenderDep, ip: ClientIpDep
) -> Accepted:
    """Send a reset link (single use, valid one hour) if the account exists. The answer is the
    same either way, and the message leaves in the background, so neither the answer nor its
    timing reveals who has an account."""
    await auth.request_password_reset(body.email, sender, ip)
    return Accepted(detail="if an account has this address, a reset link is on its way")


@router.post("/password-reset", dependencies=OPEN, status_code=204, responses=problems(400))
async def reset_password(body: ResetIn, auth: AuthDep, ip: ClientIpDep) -> None:
    """Set a new password; every session of the account ends."""
    await auth.reset_password(body.token, body.password, ip)


@router.post("/logout", status_code=204)
async def logout(principal: SessionPrincipalDep, auth: AuthDep, ip: ClientIpDep) -> None:
    """End this session: its refresh token and its access tokens stop working at once."""
    await auth.logout(principal, ip)


class ProvidersOut(BaseModel):
    providers: list[str]


@router.get("/oauth/providers", dependencies=OPEN, response_model=ProvidersOut)
async def oauth_providers(settings: SettingsDep) -> ProvidersOut:
    """Configured social / OIDC sign-in providers."""
    return ProvidersOut(providers=sorted(settings.oauth_providers))


@router.get(
    "/oauth/{provider}/authorize",
    dependencies=OPEN,
    status_code=307,
    response_class=RedirectResponse,
    responses=problems(502, 503),
)
async def oauth_authorize(provider: str, oauth: OAuthDep) -> RedirectResponse:
    """Start social sign-in: redirects to the provider (authorization code with PKCE)."""
    return RedirectResponse(await oauth.authorize_url(provider), status_code=307)


@router.get(
    "/oauth/{provider}/callback",
    dependencies=OPEN,
    response_model=TokenOut,
    responses=problems(400, 502, 503),
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
