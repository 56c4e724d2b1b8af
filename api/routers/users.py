"""/api/v1/users: the signed-in user's profile, settings, sessions and API keys; admin listing.

Everything under `/me` acts on the caller only, so one user can never reach another's data; a
session or key id that is not the caller's answers 404, exactly like one that does not exist.
API keys reach the profile, settings and consents with `read:account` / `write:account`; what
changes who can get in (keys, sessions, secrets, the password, erasure) and the full data export
need a signed-in session.
"""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.db.users import UserRow
from api.deps import (
    AdminPrincipalDep,
    AuthDep,
    ClientIpDep,
    Offset,
    PoolDep,
    PrincipalDep,
    SessionPrincipalDep,
    require_scope,
)
from api.errors import ProblemError, problems
from api.schemas import RequestModel, plain_decimal
from api.security.tokens import verify_password
from api.services.accounts import AccountService
from api.services.preferences import UserSettings, preferences
from api.services.privacy import erase_user, export_user

router = APIRouter(prefix="/api/v1/users", tags=["users"])
READ = [require_scope("read:account")]
WRITE = [require_scope("write:account")]


async def get_accounts(pool: PoolDep) -> AccountService:
    return AccountService(pool)


AccountsDep = Annotated[AccountService, Depends(get_accounts)]


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    display_name: str
    role: str
    timezone: str
    currency: str
    email_verified: bool
    created_at: datetime


def user_out(user: UserRow, email: str) -> UserOut:
    return UserOut(
        id=user.id,
        email=email,
        display_name=user.display_name,
        role=user.role,
        timezone=user.timezone,
        currency=user.currency,
        email_verified=user.email_verified_at is not None,
        created_at=user.created_at,
    )


class ProfilePatch(RequestModel):
    display_name: str | None = Field(default=None, min_length=1, max_length=80)
    timezone: str | None = Field(default=None, max_length=64, description="IANA, e.g. Europe/Paris")
    currency: str | None = Field(default=None, pattern="^[A-Z]{3}$", description="ISO 4217")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None and value not in zoneinfo.available_timezones():
            raise ValueError(f"unknown time zone {value!r}")
        return value

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"display_name": "Jane D.", "timezone": "Europe/Paris", "currency": "EUR"}]
        }
    )


class SessionOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str
    current: bool


class ApiKeyIn(RequestModel):
    name: str = Field(min_length=1, max_length=80)
    scopes: list[str] = Field(min_length=1, max_length=10)
    expires_at: datetime | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "notebook",
                    "scopes": ["read:market", "read:predictions"],
                    "expires_at": "2027-06-30T00:00:00Z",
                }
            ]
        }
    )


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="the key's public part, to recognise it in a list")
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="the secret key, shown this once only")


@router.get("/me", dependencies=READ, response_model=UserOut)
async def get_me(accounts: AccountsDep, principal: PrincipalDep, auth: AuthDep) -> UserOut:
    """Your profile."""
    user = await accounts.me(principal.user_id)
    return user_out(user, auth.email_of(user))


@router.patch("/me", dependencies=WRITE, response_model=UserOut)
async def patch_me(
    body: ProfilePatch, accounts: AccountsDep, principal: PrincipalDep, auth: AuthDep
) -> UserOut:
    """Change display name, time zone (IANA) or currency (ISO 4217)."""
    changes = body.model_dump(exclude_none=True)
    user = await accounts.update_profile(principal.user_id, changes)
    return user_out(user, auth.email_of(user))


@router.get("/me/settings", dependencies=READ, response_model=UserSettings)
async def get_settings(accounts: AccountsDep, principal: PrincipalDep) -> UserSettings:
    """Your preferences (notifications, default model, risk tolerance)."""
    return preferences((await accounts.me(principal.user_id)).settings)


@router.put("/me/settings", dependencies=WRITE, response_model=UserSettings)
async def put_settings(
    body: UserSettings, accounts: AccountsDep, principal: PrincipalDep
) -> UserSettings:
    """Replace your preferences."""
    await accounts.put_preferences(principal.user_id, body)
    return body


@router.get("/me/sessions", response_model=list[SessionOut])
async def list_sessions(principal: SessionPrincipalDep, auth: AuthDep) -> list[SessionOut]:
    """Signed-in devices (live sessions), newest first."""
    return [
        SessionOut(
            id=s.id,
            created_at=s.created_at,
            last_used_at=s.last_used_at,
            expires_at=s.expires_at,
            user_agent=s.user_agent,
            current=s.id == principal.session_id,
        )
        for s in await auth.sessions(principal.user_id)
    ]


@router.delete("/me/sessions", status_code=204)
async def end_all_sessions(principal: SessionPrincipalDep, auth: AuthDep, ip: ClientIpDep) -> None:
    """Sign out everywhere, this session included."""
    await auth.end_all_sessions(principal.user_id, ip, "signed out everywhere")


@router.delete("/me/sessions/{session_id}", status_code=204)
async def end_session(
    session_id: uuid.UUID, principal: SessionPrincipalDep, auth: AuthDep, ip: ClientIpDep
) -> None:
    """Sign out one device (its refresh and access tokens stop working)."""
    await auth.end_session(principal.user_id, session_id, ip, "ended by user")


@router.post("/me/api-keys", response_model=ApiKeyCreated, status_code=201)
async def create_api_key(
    body: ApiKeyIn, principal: SessionPrincipalDep, auth: AuthDep, ip: ClientIpDep
) -> ApiKeyCreated:
    """A scoped key for scripts; the secret is in this response only (we keep a hash)."""
    row, key = await auth.create_api_key(
        principal.user_id, body.name, body.scopes, body.expires_at, ip
    )
    return ApiKeyCreated(
        **ApiKeyOut.model_validate(row, from_attributes=True).model_dump(), key=key
    )


@router.get("/me/api-keys", response_model=list[ApiKeyOut])
async def list_api_keys(auth: AuthDep, principal: SessionPrincipalDep) -> list[ApiKeyOut]:
    """Your API keys, newest first (never the secrets)."""
    rows = await auth.api_keys(principal.user_id)
    return [ApiKeyOut.model_validate(r, from_attributes=True) for r in rows]


@router.delete("/me/api-keys/{key_id}", status_code=204)
async def revoke_api_key(
    key_id: uuid.UUID, principal: SessionPrincipalDep, auth: AuthDep, ip: ClientIpDep
) -> None:
    """Revoke a key at once."""
    await auth.revoke_api_key(principal.user_id, key_id, ip)


class PasswordChange(RequestModel):
    current_password: str = Field(max_length=256)
    new_password: str = Field(max_length=256, description="at least 12 characters")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "current_password": "correct horse battery staple",
                    "new_password": "a brand new long passphrase",
                }
            ]
        }
    )


class PasswordChanged(BaseModel):
    sessions_ended: int = Field(description="your other sessions, now signed out")


@router.post("/me/password", response_model=PasswordChanged, responses=problems(403, 409, 429))
async def change_password(
    body: PasswordChange, principal: SessionPrincipalDep, auth: AuthDep, ip: ClientIpDep
) -> PasswordChanged:
    """Change your password (the current one is required); your other sessions end."""
    ended = await auth.change_password(principal, body.current_password, body.new_password, ip)
    return PasswordChanged(sessions_ended=ended)


class ErasureIn(RequestModel):
    confirm: Literal["DELETE MY ACCOUNT"] = Field(description='type "DELETE MY ACCOUNT"')
    password: str | None = Field(default=None, max_length=256, description="current password")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"confirm": "DELETE MY ACCOUNT", "password": "correct horse battery staple"}
            ]
        }
    )


class ConsentIn(RequestModel):
    kind: Literal["terms", "privacy_policy", "marketing_email", "analytics"]
    granted: bool

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"kind": "marketing_email", "granted": False}]}
    )


class ConsentOut(BaseModel):
    kind: str
    granted: bool
    at: datetime


SecretName = Literal["togetherai_api_key", "openai_api_key"]


class SecretIn(RequestModel):
    value: str = Field(min_length=8, max_length=512)

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"value": "tgp_v1_your-own-provider-key"}]}
    )


class SecretOut(BaseModel):
    name: str
    updated_at: datetime


@router.get("/me/export")
async def export_me(
    principal: SessionPrincipalDep, pool: PoolDep, auth: AuthDep, ip: ClientIpDep
) -> dict:
    """Everything we hold about you, as one JSON document (GDPR art. 15 and 20)."""
    document = await export_user(pool, principal.user_id, auth.keyring)
    await auth.audit("data_exported", principal.user_id, ip)
    return jsonable_encoder(document, custom_encoder={Decimal: plain_decimal})  # exact amounts


@router.delete("/me", status_code=204, responses=problems(403))
async def erase_me(
    body: ErasureIn,
    principal: SessionPrincipalDep,
    pool: PoolDep,
    accounts: AccountsDep,
    auth: AuthDep,
) -> None:
    """Erase the account and all its data (GDPR art. 17); every token and key stops working.
    The security audit trail keeps its entries, anonymised."""
    user = await accounts.me(principal.user_id)
    if (
        user.password_hash is not None
        and not (await verify_password(body.password or "", user.password_hash))[0]
    ):
        raise ProblemError(403, "wrong_password", "the current password is required to erase")
    for session_id in await erase_user(pool, principal.user_id):
        await auth.forget_session(session_id)


@router.post("/me/consents", dependencies=WRITE, response_model=ConsentOut, status_code=201)
async def record_consent(
    body: ConsentIn, principal: PrincipalDep, accounts: AccountsDep
) -> ConsentOut:
    """Record a consent given or withdrawn; the history is kept with timestamps."""
    return ConsentOut(**await accounts.record_consent(principal.user_id, body.kind, body.granted))


@router.get("/me/consents", dependencies=READ, response_model=list[ConsentOut])
async def list_consents(principal: PrincipalDep, accounts: AccountsDep) -> list[ConsentOut]:
    """Every consent given or withdrawn, oldest first."""
    return [ConsentOut(**r) for r in await accounts.consents(principal.user_id)]


@router.put("/me/secrets/{name}", response_model=SecretOut)
async def put_secret(
    name: SecretName,
    body: SecretIn,
    principal: SessionPrincipalDep,
    accounts: AccountsDep,
    auth: AuthDep,
) -> SecretOut:
    """Keep your own provider key with us (encrypted at rest; never shown again)."""
    stored = await accounts.put_secret(principal.user_id, name, body.value, auth.keyring)
    await auth.audit("secret_stored", principal.user_id, None, name=name)
    return SecretOut(name=name, updated_at=stored)


@router.get("/me/secrets", dependencies=READ, response_model=list[SecretOut])
async def list_secrets(principal: PrincipalDep, accounts: AccountsDep) -> list[SecretOut]:
    """Which provider keys are stored (never their values)."""
    return [SecretOut(**r) for r in await accounts.secrets(principal.user_id)]


@router.delete("/me/secrets/{name}", status_code=204)
async def delete_secret(
    name: SecretName, principal: SessionPrincipalDep, accounts: AccountsDep
) -> None:
    """Forget a stored provider key."""
    await accounts.delete_secret(principal.user_id, name)


@router.get("", response_model=list[UserOut])
async def list_users(
    _: AdminPrincipalDep,
    accounts: AccountsDep,
    auth: AuthDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> list[UserOut]:
    """All accounts (administrators only)."""
    return [user_out(u, auth.email_of(u)) for u in await accounts.all_users(limit, offset)]
