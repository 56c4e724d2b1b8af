"""Account and alert e-mail over real SMTP: an aiosmtpd server started here, with STARTTLS (a
certificate made for the test) and a login. The links in the received messages verify the
address and reset the password end to end."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import ipaddress
import queue
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from redis.asyncio import Redis

from api.app import create_app
from api.security.mail import LogEmailSender, SmtpEmailSender
from api.services.notifications import AlertMailer
from api.settings import Settings
from tests.conftest import PASSWORD, sign_up
from tests.live_server import free_port
from tests.utils import play

MAILER, MAILER_PASSWORD = "mailer", "mail-relay-password"
DAY = dt.date(2022, 12, 28)


@dataclass
class Received:
    message: Message
    tls: bool
    login: str | None


class Inbox:
    """aiosmtpd's handler: every message delivered, with how its session was secured."""

    def __init__(self) -> None:
        self.messages: queue.Queue[Received] = queue.Queue()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = session.auth_data
        login = data.login.decode() if session.authenticated and data else None
        parsed = email.message_from_bytes(envelope.original_content or envelope.content)
        self.messages.put(Received(parsed, session.ssl is not None, login))
        return "250 OK"

    async def next(self, seconds: float = 15.0) -> Received:
        return await asyncio.to_thread(self.messages.get, True, seconds)


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        MAILER.encode(),
        MAILER_PASSWORD.encode(),
    )
    return AuthResult(success=ok, auth_data=data)


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp.pem", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Inbox, str]]:
    """A real SMTP server on loopback requiring STARTTLS and a login; (inbox, SMTP_URL)."""
    folder = tmp_path_factory.mktemp("smtp")
    cert, key = _certificate(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticate,
    )
    controller.start()
    try:
        yield inbox, f"smtp://{MAILER}:{MAILER_PASSWORD}@127.0.0.1:{port}?cafile={cert}"
    finally:
        controller.stop()


@pytest.fixture
async def mailing_app(
    settings: Settings, smtp: tuple[Inbox, str], first_ingest: object
) -> AsyncIterator[tuple[httpx.AsyncClient, Any, Inbox]]:
    inbox, url = smtp
    configured = settings.model_copy(
        update={
            "smtp_url": SecretStr(url),
            "mail_from": "Stock Copilot <alerts@stockcopilot.test>",
            "public_url": "https://app.stockcopilot.test",
        }
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, app, inbox


def _token(message: Message) -> tuple[str, str]:
    """(link path, token) of the link in a received account e-mail."""
    text = message.get_payload(decode=True).decode()
    link = re.search(r"https://app\.stockcopilot\.test(/\S+)", text)
    assert link, text
    path = link.group(1)
    return urlsplit(path).path, parse_qs(urlsplit(path).query)["token"][0]


async def test_the_verification_link_in_the_received_mail_verifies_the_address(
    mailing_app: tuple[httpx.AsyncClient, Any, Inbox],
) -> None:
    client, app, inbox = mailing_app
    assert isinstance(app.state.email_sender, SmtpEmailSender)
    address = f"verify-{uuid.uuid4().hex[:8]}@example.com"
    user = await sign_up(client, address)
    asked = await client.post("/api/v1/auth/verify-email/request", headers=user)
    assert asked.status_code == 202 and asked.json()["status"] == "accepted"
    received = await inbox.next()
    assert received.tls and received.login == MAILER  # STARTTLS, then the relay's login
    assert received.message["To"] == address
    assert received.message["From"] == "Stock Copilot <alerts@stockcopilot.test>"
    path, token = _token(received.message)
    assert path == "/account/verify-email"
    verified = await client.post("/api/v1/auth/verify-email", json={"token": token})
    assert verified.status_code == 204
    assert (await client.get("/api/v1/users/me", headers=user)).json()["email_verified"]


async def test_the_reset_link_in_the_received_mail_resets_the_password(
    mailing_app: tuple[httpx.AsyncClient, Any, Inbox],
) -> None:
    client, _, inbox = mailing_app
    address = f"reset-{uuid.uuid4().hex[:8]}@example.com"
    await sign_up(client, address)
    asked = await client.post("/api/v1/auth/password-reset/request", json={"email": address})
    assert asked.status_code == 202 and asked.json()["status"] == "accepted"
    received = await inbox.next()
    assert received.message["Subject"] == "Reset your password"
    path, token = _token(received.message)
    assert path == "/account/reset-password"
    new = "the passphrase from the e-mail"
    reset = await client.post("/api/v1/auth/password-reset", json={"token": token, "password": new})
    assert reset.status_code == 204
    old = await client.post("/api/v1/auth/login", json={"email": address, "password": PASSWORD})
    assert old.status_code == 401
    login = await client.post("/api/v1/auth/login", json={"email": address, "password": new})
    assert login.status_code == 200
    unknown = await client.post(
        "/api/v1/auth/password-reset/request", json={"email": f"nobody-{uuid.uuid4()}@example.com"}
    )
    assert unknown.status_code == 202 and unknown.json() == asked.json()  # reveals nothing


async def test_alerts_are_mailed_to_users_who_opted_in(
    mailing_app: tuple[httpx.AsyncClient, Any, Inbox], pool: asyncpg.Pool, redis: Redis
) -> None:
    client, app, inbox = mailing_app
    address = f"alerted-{uuid.uuid4().hex[:8]}@example.com"
    user = await sign_up(client, address)
    prefs = (await client.get("/api/v1/users/me/settings", headers=user)).json()
    assert prefs["notifications"]["email"] is False  # opt in, not out
    prefs["notifications"]["email"] = True
    await client.put("/api/v1/users/me/settings", json=prefs, headers=user)
    quiet = await sign_up(client, f"quiet-{uuid.uuid4().hex[:8]}@example.com")
    for who in (user, quiet):
        made = await client.post(
            "/api/v1/users/me/alerts",
            json={"kind": "price", "ticker": "XOM", "direction": "above", "level": 1},
            headers=who,
        )
        assert made.status_code == 201
    await play(pool, redis, DAY, mailer=AlertMailer(app.state.email_sender, app.state.keyring))
    deadline = time.monotonic() + 15
    mine: list[Received] = []
    while time.monotonic() < deadline and not mine:
        received = await inbox.next()
        if received.message["Subject"].startswith("Alert:"):
            mine.append(received)
    (alert,) = mine
    assert alert.message["To"] == address  # the user who did not opt in got none
    assert "XOM" in alert.message["Subject"]
    with pytest.raises(queue.Empty):
        await asyncio.to_thread(inbox.messages.get, True, 1.0)


async def test_without_smtp_mail_is_only_logged_and_an_unreachable_server_fails_no_request(
    settings: Settings, first_ingest: object
) -> None:
    assert isinstance(create_app(settings).state.email_sender, LogEmailSender)
    dead = f"smtps://u:p@127.0.0.1:{free_port()}"
    app = create_app(settings.model_copy(update={"smtp_url": SecretStr(dead)}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            address = f"unmailed-{uuid.uuid4().hex[:8]}@example.com"
            await sign_up(client, address)
            asked = await client.post(
                "/api/v1/auth/password-reset/request", json={"email": address}
            )
            assert asked.status_code == 202  # the failed send is logged, not the caller's problem
