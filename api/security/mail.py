"""Outgoing e-mail: account links (verification, password reset) and alert notices.

With `SMTP_URL` set, messages go over SMTP with aiosmtplib, always encrypted:
`smtps://user:password@host:465` (implicit TLS) or `smtp://user:password@host:587` (STARTTLS,
required). `?cafile=/path/ca.pem` trusts a private CA; `?tls=none` sends in the clear and is
meant for a relay on the same host only. Sending happens in the background, after the request
has been answered, so neither a slow server nor the answer's timing reveals whether an account
exists; a failed send is logged (address masked) and never fails the request. On shutdown the
sender waits for the messages still in flight.

Without `SMTP_URL` the log sender says that a message would be sent, link masked: the product
runs without a mail server, and a log must never hold a usable token. The start-up log says
which sender is in use.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, parseaddr
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from api.logging import mask_email
from api.settings import Settings

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

    def message(self, public_url: str) -> tuple[str, str]:
        """(subject, text) of the e-mail."""
        link = public_url.rstrip("/") + self.link_path
        if self.purpose == "verify_email":
            return (
                "Confirm your e-mail address",
                f"Open this link within two days to confirm your address:\n\n{link}\n\n"
                "If you did not create a Stock Copilot account, ignore this message.",
            )
        return (
            "Reset your password",
            f"Open this link within an hour to choose a new password:\n\n{link}\n\n"
            "If you did not ask for it, ignore this message: your password stays as it is.",
        )


@dataclass(frozen=True)
class AlertEmail:
    to: str
    title: str
    detail: str

    def message(self, public_url: str) -> tuple[str, str]:
        return (
            f"Alert: {self.title}",
            f"{self.title}\n\n{self.detail}\n\nYour alerts: {public_url.rstrip('/')}\n"
            "You receive these because alert e-mails are on in your settings.",
        )


Email = AccountEmail | AlertEmail


class EmailSender(Protocol):
    async def send(self, message: Email) -> None: ...

    async def aclose(self) -> None: ...


class LogEmailSender:
    """No SMTP server configured: says a message would be sent, link masked."""

    async def send(self, message: Email) -> None:
        if isinstance(message, AccountEmail):
            masked = message.link_path.replace(message.token, message.token[:4] + "…")
            log.info(
                "account_email", to=mask_email(message.to), purpose=message.purpose, link=masked
            )
        else:
            log.info("alert_email", to=mask_email(message.to), title=message.title)

    async def aclose(self) -> None:
        return None


class OutboxEmailSender:
    """Keeps messages in memory (tests, or a preview inbox in development)."""

    def __init__(self) -> None:
        self.sent: list[Email] = []

    async def send(self, message: Email) -> None:
        self.sent.append(message)

    def last(self, to: str, purpose: str) -> AccountEmail:
        return next(
            m
            for m in reversed(self.sent)
            if isinstance(m, AccountEmail) and m.to == to and m.purpose == purpose
        )

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool
    starttls: bool
    cafile: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtps://user:pass@host:465 or smtp://…:587")
        query = parse_qs(parts.query)
        plain = query.get("tls", [""])[0] == "none"
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 587),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=implicit,
            starttls=not implicit and not plain,
            cafile=query.get("cafile", [None])[0],
        )

    @property
    def encrypted(self) -> bool:
        return self.implicit_tls or self.starttls

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile)


class SmtpEmailSender:
    """Sends over SMTP in background tasks (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_url is not None
        self._server = SmtpServer.parse(settings.smtp_url.get_secret_value())
        self._sender = settings.mail_from
        self._public_url = settings.public_url
        self._timeout = settings.smtp_timeout_s
        self._pending: set[asyncio.Task[None]] = set()
        log.info("email_via_smtp", host=self._server.host, port=self._server.port)

    async def send(self, message: Email) -> None:
        task = asyncio.create_task(self._deliver(message), name="smtp-send")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _deliver(self, message: Email) -> None:
        import aiosmtplib

        subject, text = message.message(self._public_url)
        email = EmailMessage()
        email["From"] = formataddr(parseaddr(self._sender))
        email["To"] = message.to
        email["Subject"] = subject
        email.set_content(text)
        server = self._server
        try:
            await aiosmtplib.send(
                email,
                hostname=server.host,
                port=server.port,
                username=server.username,
                password=server.password,
                use_tls=server.implicit_tls,
                start_tls=server.starttls,
                tls_context=server.tls_context()
                if server.implicit_tls or server.starttls
                else None,
                timeout=self._timeout,
            )
            log.info("email_sent", to=mask_email(message.to), subject=subject)
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            log.warning("email_failed", to=mask_email(message.to), error=type(exc).__name__)

    async def aclose(self) -> None:
        """Wait for the messages in flight (each bounded by the SMTP timeout)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def email_sender(settings: Settings) -> EmailSender:
    """SMTP when configured, else the log sender, and say which at start."""
    if settings.smtp_url is not None:
        return SmtpEmailSender(settings)
    log.info("email_to_log_only", hint="set SMTP_URL to send verification and reset e-mails")
    return LogEmailSender()
