"""A user's preferences: what the frontend keeps for them, and what decides which notifications
reach them and how (stored as one JSON document on the user)."""

from __future__ import annotations

from typing import Any, Literal

import structlog
from pydantic import ConfigDict, Field, ValidationError, field_validator

from api.schemas import RequestModel
from contracts import DEFAULT_FAMILY, FAMILIES

log = structlog.get_logger(__name__)


class NotificationPrefs(RequestModel):
    email: bool = Field(default=False, description="alerts by e-mail too (opt in)")
    push: bool = True
    model_events: bool = Field(
        default=False, description="model promotions and rollbacks on /ws/notifications"
    )


class UserSettings(RequestModel):
    """Preferences the frontend keeps for the user (stored as one JSON document)."""

    notifications: NotificationPrefs = Field(default_factory=NotificationPrefs)
    default_model: str = Field(default=DEFAULT_FAMILY, description=", ".join(FAMILIES))
    risk_tolerance: Literal["low", "medium", "high"] = "medium"

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "notifications": {"email": True, "push": False, "model_events": False},
                    "default_model": DEFAULT_FAMILY,
                    "risk_tolerance": "medium",
                }
            ]
        },
    )

    @field_validator("default_model")
    @classmethod
    def _served_family(cls, value: str) -> str:
        if value not in FAMILIES:
            raise ValueError(f"default_model must be one of {', '.join(FAMILIES)}")
        return value


def preferences(stored: dict[str, Any]) -> UserSettings:
    """The stored document as settings; one written by an older release (with fields since
    dropped, say) falls back to the defaults rather than failing the user's requests."""
    try:
        return UserSettings.model_validate(stored)
    except ValidationError:
        log.warning("user_settings_unreadable")
        return UserSettings()
