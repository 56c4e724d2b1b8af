"""Outgoing account e-mail (verification, password reset) behind a small interface.

The default sender writes a log line with the link masked — the product runs without an SMTP
server, and a log must never hold a usable token. Deployments plug in a real sender by setting
`app.state.email_sender`; tests plug in one that keeps the messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import structlog

from api.logging import mask_email

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AccountEmail:
    to: str
    purpose: str  # verify_email | reset_password
    token: str  # single use, expiring; goes into the link

    @property
    def link_path(self) -> str:
        page = "verify-email" if self.purpose == "verify_email" else "reset-password"
        return f"/account/{page}?token={self.token}"


class EmailSender(Protocol):
    async def send(self, message: AccountEmail) -> None: ...


class LogEmailSender:
    """Development default: says a message would be sent, link masked."""

    async def send(self, message: AccountEmail) -> None:
        masked = message.link_path.replace(message.token, message.token[:4] + "…")
        log.info("account_email", to=mask_email(message.to), purpose=message.purpose, link=masked)


class OutboxEmailSender:
    """Keeps messages in memory (tests, or a preview inbox in development)."""

    def __init__(self) -> None:
        self.sent: list[AccountEmail] = []

    async def send(self, message: AccountEmail) -> None:
        self.sent.append(message)

    def last(self, to: str, purpose: str) -> AccountEmail:
        return next(m for m in reversed(self.sent) if m.to == to and m.purpose == purpose)
