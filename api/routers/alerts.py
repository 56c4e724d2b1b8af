"""`/api/v1/users/me/alerts` and `/api/v1/users/me/notifications`: the caller's own only.

Alerts need the `alerts` scope, and a forecast alert `read:predictions` as well (its
notifications quote the forecast); notifications need the `notifications` scope."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from api.deps import PoolDep, PrincipalDep, insufficient_scope, require_scope
from api.errors import problems
from api.schemas import RequestModel
from api.services.alerts import (
    AlertBody,
    AlertService,
    DrawdownAlert,
    IndicatorAlert,
    MoveAlert,
    PredictionAlert,
    PriceAlert,
    public,
)
from api.services.auth import Principal
from api.services.notifications import NotificationService, notification_payload

router = APIRouter(prefix="/api/v1/users/me", tags=["alerts"])
ALERTS = [require_scope("alerts")]
NOTIFICATIONS = [require_scope("notifications")]


async def get_alerts(request: Request, pool: PoolDep) -> AlertService:
    return AlertService(pool, request.app.state.settings.alerts_max_per_user)


AlertsDep = Annotated[AlertService, Depends(get_alerts)]


async def get_notifications(pool: PoolDep) -> NotificationService:
    return NotificationService(pool)


NotificationsDep = Annotated[NotificationService, Depends(get_notifications)]


_OUT = ConfigDict(extra="ignore")  # a response: the request model's strictness is not its


class AlertState(BaseModel):
    id: uuid.UUID
    last_state: bool | None = Field(description="the condition on the last bar evaluated")
    last_checked: date | None = Field(description="the last trading day evaluated")
    last_fired_at: datetime | None
    fired_count: int
    created_at: datetime
    updated_at: datetime


class PriceAlertOut(AlertState, PriceAlert):
    model_config = _OUT


class MoveAlertOut(AlertState, MoveAlert):
    model_config = _OUT


class IndicatorAlertOut(AlertState, IndicatorAlert):
    model_config = _OUT


class PredictionAlertOut(AlertState, PredictionAlert):
    model_config = _OUT


class DrawdownAlertOut(AlertState, DrawdownAlert):
    model_config = _OUT


AlertOut = Annotated[
    PriceAlertOut | MoveAlertOut | IndicatorAlertOut | PredictionAlertOut | DrawdownAlertOut,
    Field(discriminator="kind"),
]
_ALERT_OUT: TypeAdapter[Any] = TypeAdapter(AlertOut)


class AlertPatch(RequestModel):
    note: str | None = Field(default=None, max_length=200)
    active: bool | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{"active": False}]})


class NotificationOut(BaseModel):
    type: Literal["notification"] = "notification"
    id: uuid.UUID
    kind: str = Field(description="alert (stored); live-only kinds: model, portfolio")
    title: str
    data: dict[str, Any]
    created_at: datetime
    read: bool


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    unread: int = Field(description="unread notifications in all")


class MarkRead(RequestModel):
    ids: list[uuid.UUID] | None = Field(
        default=None, max_length=500, description="these notifications; all when omitted"
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"ids": ["0b7a3c1e-6f0d-4d5e-9d2a-1c2b3a4d5e6f"]}, {}]}
    )


class Marked(BaseModel):
    marked: int


def _forecasts_allowed(principal: Principal, alert: Any) -> None:
    """A forecast alert reads forecasts on the caller's behalf, so it needs their scope too."""
    if isinstance(alert, PredictionAlert) and not principal.allows("read:predictions"):
        raise insufficient_scope("read:predictions")


def _out(row: Any) -> Any:
    return _ALERT_OUT.validate_python(public(row))


@router.post(
    "/alerts",
    dependencies=ALERTS,
    response_model=AlertOut,
    status_code=201,
    responses=problems(404, 409),
)
async def create_alert(body: AlertBody, principal: PrincipalDep, alerts: AlertsDep) -> Any:
    """A price cross, a daily move, an indicator or forecast condition on a ticker, or a
    drawdown of one of your portfolios; evaluated on every new trading day."""
    _forecasts_allowed(principal, body.root)
    return _out(await alerts.create(principal.user_id, body.root))


@router.get("/alerts", dependencies=ALERTS, response_model=list[AlertOut])
async def list_alerts(principal: PrincipalDep, alerts: AlertsDep) -> list[Any]:
    """Your alerts, oldest first, with what they saw on the last bar."""
    return [_out(r) for r in await alerts.list(principal.user_id)]


@router.get("/alerts/{alert_id}", dependencies=ALERTS, response_model=AlertOut)
async def get_alert(alert_id: uuid.UUID, principal: PrincipalDep, alerts: AlertsDep) -> Any:
    """One of your alerts, with what it saw on the last bar."""
    return _out(await alerts.get(principal.user_id, alert_id))


@router.put("/alerts/{alert_id}", dependencies=ALERTS, response_model=AlertOut)
async def replace_alert(
    alert_id: uuid.UUID, body: AlertBody, principal: PrincipalDep, alerts: AlertsDep
) -> Any:
    """Replace the condition; the alert starts afresh (no remembered state)."""
    _forecasts_allowed(principal, body.root)
    return _out(await alerts.replace(principal.user_id, alert_id, body.root))


@router.patch("/alerts/{alert_id}", dependencies=ALERTS, response_model=AlertOut)
async def update_alert(
    alert_id: uuid.UUID, body: AlertPatch, principal: PrincipalDep, alerts: AlertsDep
) -> Any:
    """Pause or resume (`active`), or change the note."""
    return _out(await alerts.update(principal.user_id, alert_id, body.note, body.active))


@router.delete("/alerts/{alert_id}", dependencies=ALERTS, status_code=204)
async def delete_alert(alert_id: uuid.UUID, principal: PrincipalDep, alerts: AlertsDep) -> None:
    """Delete an alert (its past notifications stay)."""
    await alerts.delete(principal.user_id, alert_id)


@router.get("/notifications", dependencies=NOTIFICATIONS, response_model=NotificationPage)
async def list_notifications(
    principal: PrincipalDep,
    notifications: NotificationsDep,
    unread: Annotated[bool, Query(description="only unread ones")] = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[datetime | None, Query(description="older than this (paging)")] = None,
) -> NotificationPage:
    """Your notifications, newest first (the same messages `/ws/notifications` pushes)."""
    rows, unread_count = await notifications.page(principal.user_id, unread, limit, before)
    return NotificationPage(
        items=[NotificationOut(**notification_payload(r)) for r in rows], unread=unread_count
    )


@router.post("/notifications/read", dependencies=NOTIFICATIONS, response_model=Marked)
async def mark_read(
    body: MarkRead, principal: PrincipalDep, notifications: NotificationsDep
) -> Marked:
    """Mark notifications read (all of them when `ids` is omitted)."""
    return Marked(marked=await notifications.mark_read(principal.user_id, body.ids))


@router.delete("/notifications/{notification_id}", dependencies=NOTIFICATIONS, status_code=204)
async def delete_notification(
    notification_id: uuid.UUID, principal: PrincipalDep, notifications: NotificationsDep
) -> None:
    """Delete one of your notifications."""
    await notifications.delete(principal.user_id, notification_id)
