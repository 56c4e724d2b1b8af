"""The transaction CSV follows OWASP's CSV-injection guidance (formula cells neutralised, every
field quoted, CRLF line ends), re-imports to the same ledger whatever its notes hold, and a
malformed file is always a 422 with line numbers."""

from __future__ import annotations

import csv
import io
import uuid

import httpx
import pytest

from tests.conftest import sign_up

HOSTILE_NOTES = [
    "=1+1",
    '=HYPERLINK("http://evil.example","click")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=tabbed",
    "\r=carriage",
    "'=already quoted",
    "''+twice",
    "line one\nline two",
    "a bare\rcarriage return",
    'with "quotes", and commas',
    "  spaces kept  ",
    "'leading quote, no formula",
    "ünïcødé ✓",
]
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
async def user(client: httpx.AsyncClient) -> dict[str, str]:
    return await sign_up(client, f"csv-{uuid.uuid4().hex[:8]}@example.com")


async def _portfolio(client: httpx.AsyncClient, user: dict[str, str], name: str) -> str:
    return (await client.post("/api/v1/portfolio", json={"name": name}, headers=user)).json()["id"]


async def _ledger(client: httpx.AsyncClient, user: dict[str, str], pid: str) -> list[tuple]:
    page = await client.get(f"/api/v1/portfolio/{pid}/transactions?limit=500", headers=user)
    keys = ("date", "type", "ticker", "quantity", "price", "amount", "fee", "note")
    return sorted(tuple(t[k] for k in keys) for t in page.json()["items"])


async def test_the_export_of_a_ledger_with_hostile_notes_re_imports_to_the_same_ledger(
    client: httpx.AsyncClient, user: dict[str, str]
) -> None:
    source = await _portfolio(client, user, "source")
    base = f"/api/v1/portfolio/{source}/transactions"
    deposit = {"type": "deposit", "amount": "10000", "date": "2022-01-03", "note": "start"}
    assert (await client.post(base, json=deposit, headers=user)).status_code == 201
    for i, note in enumerate(HOSTILE_NOTES):
        body = {
            "type": "buy",
            "ticker": "KO",
            "quantity": f"{i + 1}.5",
            "price": "0.0000001" if i == 0 else "60.25",
            "fee": "0.5",
            "date": "2022-01-04",
            "note": note,
        }
        response = await client.post(base, json=body, headers=user)
        assert response.status_code == 201, (note, response.text)

    exported = await client.get(f"{base}/export", headers=user)
    text = exported.text
    assert text.endswith("\r\n")
    records = list(csv.reader(io.StringIO(text, newline="")))
    assert len(records) == len(HOSTILE_NOTES) + 2  # header, deposit, buys: no row was split
    for record in records:
        for cell in record:
            assert not cell.startswith(TRIGGERS), cell  # no cell a spreadsheet would evaluate
    for line in text.split("\r\n")[:-1]:
        if line:
            assert line.startswith('"') or line[0] not in "=+-@", line  # every field quoted

    copy = await _portfolio(client, user, "copy")
    again = await client.post(
        f"/api/v1/portfolio/{copy}/transactions/import",
        files={"file": ("ledger.csv", exported.content, "text/csv")},
        headers=user,
    )
    assert again.status_code == 201, again.text
    assert await _ledger(client, user, copy) == await _ledger(client, user, source)


@pytest.mark.parametrize(
    ("content", "line"),
    [
        # a bare CR ends a record, as in spreadsheets: "b" is line 4, with no type
        (b"date,type,amount,note\n2022-01-03,deposit,5,ok\n2022-01-04,deposit,5,a\rb\n", 4),
        (b'date,type,amount,note\n2022-01-03,deposit,5,"never closed\n', 2),
        (b"date,type,amount,note\n2022-01-03,deposit,5,nul\x00here\n", 2),
        (b"date,type,amount,note\n2022-01-03,deposit,5,\xe9t\xe9\n", None),
        (b"date,type,amount\n2022-01-03,deposit,5,surplus\n", 2),
    ],
    ids=["bare-cr", "open-quote", "nul", "not-utf8", "extra-field"],
)
async def test_malformed_csv_is_a_422_with_its_line(
    client: httpx.AsyncClient, user: dict[str, str], content: bytes, line: int | None
) -> None:
    pid = await _portfolio(client, user, f"bad-{uuid.uuid4().hex[:6]}")
    response = await client.post(
        f"/api/v1/portfolio/{pid}/transactions/import",
        files={"file": ("bad.csv", content)},
        headers=user,
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_csv"
    if line is not None:
        assert [e["line"] for e in body["errors"]] == [line], body


async def test_malformed_bar_csv_is_a_422_for_the_admin_too(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    for content in (b'date,close\n2020-01-02,"1\n', b"date,close\n2020-01-02,1\x00\n", b"\xff\xfe"):
        response = await client.post(
            "/api/v1/admin/bars/import",
            params={"ticker": "BADCSV"},
            files={"file": ("bars.csv", content)},
            headers=admin_headers,
        )
        assert response.status_code == 422, (content, response.text)
