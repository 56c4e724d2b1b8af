"""Hostile input is refused at the edge with a 4xx that names the field, and never reaches a
500: control characters and NUL in any text, numbers a database or a float cannot hold, bodies
too large or too deep, fields the API does not know."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from tests.conftest import sign_up

NUL = "AA\u0000PL"


@pytest.fixture(scope="module")
async def user(client: httpx.AsyncClient) -> dict[str, str]:
    return await sign_up(client, f"hostile-{uuid.uuid4().hex[:8]}@example.com")


@pytest.fixture(scope="module")
async def portfolio(client: httpx.AsyncClient, user: dict[str, str]) -> str:
    made = await client.post("/api/v1/portfolio", json={"name": "hostile"}, headers=user)
    return made.json()["id"]


def _refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert any(field in ".".join(e["loc"]) for e in body["errors"]), body


async def test_nul_in_any_stored_text_is_refused_naming_the_field(
    client: httpx.AsyncClient, user: dict[str, str], portfolio: str
) -> None:
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/api/v1/portfolio", {"name": NUL}, "name"),
        ("PATCH", f"/api/v1/portfolio/{portfolio}", {"name": NUL}, "name"),
        ("POST", "/api/v1/portfolio/watchlists", {"name": NUL, "tickers": []}, "name"),
        (
            "POST",
            f"/api/v1/portfolio/{portfolio}/transactions",
            {"type": "deposit", "amount": "1", "date": "2022-01-03", "note": NUL},
            "note",
        ),
        (
            "POST",
            "/api/v1/users/me/alerts",
            {"kind": "price", "ticker": "AAPL", "direction": "above", "level": 1, "note": NUL},
            "note",
        ),
        ("POST", "/api/v1/chat/conversations", {"title": NUL}, "title"),
        ("PATCH", "/api/v1/users/me", {"display_name": NUL}, "display_name"),
        ("POST", "/api/v1/users/me/api-keys", {"name": NUL, "scopes": ["chat"]}, "name"),
        (
            "POST",
            "/api/v1/auth/register",
            {"email": "nul@example.com", "password": "x" * 20, "display_name": NUL},
            "display_name",
        ),
    ]
    for method, path, body, field in cases:
        _refused(await client.request(method, path, json=body, headers=user), field)
    conversation = await client.post("/api/v1/chat/conversations", json={}, headers=user)
    message = await client.post(
        f"/api/v1/chat/conversations/{conversation.json()['id']}/messages",
        json={"content": "hello\u0000"},
        headers=user,
    )
    _refused(message, "content")
    _refused(await client.get("/api/v1/stocks", params={"q": NUL}, headers=user), "q")


@pytest.mark.parametrize(
    "text",
    ["\u202eevil", "a\u2066b", "bell\u0007", "esc\u001b[31m", "c1\u0085", "\ud800"],
    ids=["rtl-override", "isolate", "bell", "escape", "c1", "lone-surrogate"],
)
async def test_invisible_and_control_characters_are_refused(
    client: httpx.AsyncClient, user: dict[str, str], text: str
) -> None:
    body = json.dumps({"name": text}).encode()  # escaped: a lone surrogate travels as \\ud800
    response = await client.post(
        "/api/v1/portfolio",
        content=body,
        headers={**user, "content-type": "application/json"},
    )
    _refused(response, "name")


async def test_tabs_and_line_breaks_stay_allowed_in_free_text(
    client: httpx.AsyncClient, user: dict[str, str], portfolio: str
) -> None:
    note = "line one\r\nline two\tafter a tab"
    response = await client.post(
        f"/api/v1/portfolio/{portfolio}/transactions",
        json={"type": "deposit", "amount": "5", "date": "2022-01-03", "note": note},
        headers=user,
    )
    assert response.status_code == 201 and response.json()["note"] == note


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantity", "1e-20000"),
        ("price", "1e-17000"),
        ("quantity", "1e13"),
        ("price", "0.00000000001"),  # 11 decimal places
        ("quantity", "NaN"),
        ("quantity", "Infinity"),
    ],
)
async def test_decimals_out_of_bounds_are_422(
    client: httpx.AsyncClient, user: dict[str, str], portfolio: str, field: str, value: str
) -> None:
    body = {"type": "buy", "ticker": "AAPL", "quantity": "1", "price": "100", "date": "2022-01-04"}
    response = await client.post(
        f"/api/v1/portfolio/{portfolio}/transactions",
        json={**body, field: value},
        headers=user,
    )
    _refused(response, field)


async def test_json_numbers_a_float_cannot_hold_are_refused(
    client: httpx.AsyncClient, user: dict[str, str]
) -> None:
    for raw in ("1e999", "NaN", "-Infinity", "1" * 60):
        body = f'{{"kind": "price", "ticker": "AAPL", "direction": "above", "level": {raw}}}'
        response = await client.post(
            "/api/v1/users/me/alerts",
            content=body.encode(),
            headers={**user, "content-type": "application/json"},
        )
        assert response.status_code == 422, (raw, response.text)


async def test_decimals_are_answered_in_plain_notation_everywhere(
    client: httpx.AsyncClient, user: dict[str, str]
) -> None:
    made = await client.post("/api/v1/portfolio", json={"name": "plain"}, headers=user)
    base = f"/api/v1/portfolio/{made.json()['id']}"
    deposit = await client.post(
        f"{base}/transactions",
        json={"type": "deposit", "amount": "1.0E+5", "date": "2022-01-03"},
        headers=user,
    )
    assert deposit.status_code == 201 and deposit.json()["amount"] == "100000"
    tiny = await client.post(
        f"{base}/transactions",
        json={
            "type": "buy",
            "ticker": "KO",
            "quantity": "1E-7",
            "price": "60",
            "date": "2022-01-04",
        },
        headers=user,
    )
    assert tiny.status_code == 201 and tiny.json()["quantity"] == "0.0000001"
    positions = (await client.get(f"{base}/positions", headers=user)).json()
    assert positions["positions"][0]["quantity"] == "0.0000001"
    assert "E" not in positions["cash"] and "E" not in positions["invested"]
    export = (await client.get(f"{base}/transactions/export", headers=user)).text
    assert '"100000"' in export and '"0.0000001"' in export and "E+" not in export
    gdpr = (await client.get("/api/v1/users/me/export", headers=user)).text
    assert "E-7" not in gdpr and "E+5" not in gdpr


async def test_a_withdrawal_beyond_the_cash_balance_is_refused(
    client: httpx.AsyncClient, user: dict[str, str]
) -> None:
    made = await client.post("/api/v1/portfolio", json={"name": "cash"}, headers=user)
    base = f"/api/v1/portfolio/{made.json()['id']}/transactions"
    deposit = await client.post(
        base, json={"type": "deposit", "amount": "100", "date": "2022-01-03"}, headers=user
    )
    too_much = await client.post(
        base, json={"type": "withdraw", "amount": "100.01", "date": "2022-01-04"}, headers=user
    )
    assert too_much.status_code == 422 and too_much.json()["code"] == "insufficient_cash"
    assert too_much.json()["cash"] == "100"
    before = await client.post(  # back-dated before the deposit: nothing to take yet
        base, json={"type": "withdraw", "amount": "1", "date": "2022-01-02"}, headers=user
    )
    assert before.status_code == 422 and before.json()["code"] == "insufficient_cash"
    ok = await client.post(
        base, json={"type": "withdraw", "amount": "100", "date": "2022-01-04"}, headers=user
    )
    assert ok.status_code == 201
    undo = await client.delete(f"{base}/{deposit.json()['id']}", headers=user)
    assert undo.status_code == 422 and undo.json()["code"] == "insufficient_cash"


async def test_unknown_fields_in_a_body_are_refused(
    client: httpx.AsyncClient, user: dict[str, str]
) -> None:
    response = await client.post(
        "/api/v1/portfolio", json={"name": "typo", "base_curency": "EUR"}, headers=user
    )
    _refused(response, "base_curency")
    settings = await client.put(
        "/api/v1/users/me/settings", json={"risk_tolerance": "low", "role": "admin"}, headers=user
    )
    _refused(settings, "role")


async def test_deeply_nested_json_is_refused_not_a_crash(
    client: httpx.AsyncClient, user: dict[str, str]
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = await client.post(
        "/api/v1/portfolio", content=deep, headers={**user, "content-type": "application/json"}
    )
    assert response.status_code == 422 and "nested" in response.json()["detail"]


async def test_bodies_over_the_limit_get_413_unread(
    settings: Settings, first_ingest: object
) -> None:
    app = create_app(settings.model_copy(update={"max_body_bytes": 4096}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            user = await sign_up(client, f"big-{uuid.uuid4().hex[:8]}@example.com")
            big = json.dumps({"name": "x" * 5000})
            announced = await client.post(
                "/api/v1/portfolio",
                content=big,
                headers={**user, "content-type": "application/json"},
            )
            assert announced.status_code == 413 and announced.json()["code"] == "body_too_large"

            async def chunks() -> Any:  # no Content-Length: counted as it streams
                for _ in range(5):
                    yield b"x" * 1000

            streamed = await client.post(
                "/api/v1/portfolio",
                content=chunks(),
                headers={**user, "content-type": "application/json"},
            )
            assert streamed.status_code == 413
            # a CSV import has its own, larger limit (`max_upload_bytes`)
            made = await client.post("/api/v1/portfolio", json={"name": "up"}, headers=user)
            rows = "".join(f"2022-01-03,deposit,,,,1,,row {i}\n" for i in range(300))
            csv = ("date,type,ticker,quantity,price,amount,fee,note\n" + rows).encode()
            assert len(csv) > 4096
            upload = await client.post(
                f"/api/v1/portfolio/{made.json()['id']}/transactions/import",
                files={"file": ("t.csv", csv)},
                headers=user,
            )
            assert upload.status_code == 201 and upload.json() == {"imported": 300}
