"""/api/v1/auth: register, log in (JSON or the OAuth2 password form), refresh, log out.

Every route here spends the strict `auth` rate-limit tier per client address; logins are also
locked per account after repeated failures (see AuthService.login).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from api.deps import AuthDep, ClientIpDep, PrincipalDep, rate_limited
from api.routers.users import UserOut, user_out
from api.services.auth import TokenPair

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], dependencies=[rate_limited("auth")])


class RegisterIn(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=256, description="at least 12 characters")
    display_name: str = Field(min_length=1, max_length=80)


class LoginIn(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=256)


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=16, max_length=200)


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


@router.post("/register", response_model=UserOut, status_code=201)
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


@router.post("/logout", status_code=204)
async def logout(principal: PrincipalDep, auth: AuthDep, ip: ClientIpDep) -> None:
    """End this session: its refresh token and its access tokens stop working at once."""
    await auth.logout(principal, ip)
