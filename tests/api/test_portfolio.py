"""Portfolios: FIFO math against hand-worked examples, the API with ownership, idempotency,
concurrent sells, pagination, and all-or-nothing CSV import."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from decimal import Decimal as D

import asyncpg
import httpx
import pytest

from api.services.ledger import Entry, Oversold, replay
from tests.conftest import ANONYMOUS, sign_up

# ---------------------------------------------------------------- the ledger, by hand


def test_fifo_sells_the_oldest_lots_first_and_books_realised_pnl() -> None:
    book = replay(
        [
            Entry("deposit", date(2024, 1, 2), amount=D("5000")),
            Entry("buy", date(2024, 1, 3), "AAPL", D("10"), D("100"), fee=D("5")),  # 100.50/sh
            Entry("buy", date(2024, 2, 1), "AAPL", D("10"), D("120")),
            Entry("sell", date(2024, 3, 1), "AAPL", D("15"), D("130"), fee=D("2")),
            Entry("dividend", date(2024, 3, 15), "AAPL", amount=D("4")),
            Entry("fee", date(2024, 3, 31), amount=D("1")),
        ]
    )
    aapl = book.positions["AAPL"]
    # sold 10 @ 100.50 + 5 @ 120 = 1605 of cost for 15 × 130 − 2 = 1948
    assert aapl.realised == D("343")
    assert aapl.quantity == D("5") and aapl.cost_basis == D("600")  # 5 left of the 120 lot
    assert aapl.dividends == D("4")
    # 5000 − 1005 − 1200 + 1948 + 4 − 1
    assert book.cash == D("4746")
    assert book.fees == D("8")


def test_a_sell_beyond_the_holding_at_its_date_is_refused_even_if_shares_come_later() -> None:
    entries = [
        Entry("buy", date(2024, 1, 3), "KO", D("10"), D("50"), sequence=1),
        Entry("sell", date(2024, 1, 10), "KO", D("12"), D("55"), sequence=2),
        Entry("buy", date(2024, 1, 20), "KO", D("10"), D("52"), sequence=3),
    ]
    with pytest.raises(Oversold, match="10 held") as caught:
        replay(entries)
    assert caught.value.entry.sequence == 2
    fine = replay(
        [*entries[:1], entries[2], Entry("sell", date(2024, 2, 1), "KO", D("20"), D("60"))]
    )
    assert fine.positions["KO"].quantity == 0
    assert fine.positions["KO"].realised == D("20") * 60 - D("500") - D("520")


def test_same_day_entries_apply_in_recorded_order() -> None:
    day = date(2024, 5, 1)
    with pytest.raises(Oversold):
        replay(
            [
                Entry("sell", day, "X", D("1"), D("1"), sequence=1),
                Entry("buy", day, "X", D("1"), D("1"), sequence=2),
            ]
        )
    assert (
        replay(
            [
                Entry("buy", day, "X", D("1"), D("1"), sequence=1),
                Entry("sell", day, "X", D("1"), D("1"), sequence=2),
            ]
        )
        .positions["X"]
        .quantity
        == 0
    )


# ---------------------------------------------------------------- the API


async def _portfolio(client: httpx.AsyncClient, headers: dict[str, str], name: str = "Main") -> str:
    response = await client.post("/api/v1/portfolio", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _user() -> str:
    return f"pf-{uuid.uuid4().hex[:10]}@example.com"


async def test_transactions_positions_and_valuation_through_the_api(
    client: httpx.AsyncClient,
) -> None:
    user = await sign_up(client, _user())
    pid = await _portfolio(client, user)
    url = f"/api/v1/portfolio/{pid}/transactions"
    for body in (
        {"type": "deposit", "amount": "10000", "date": "2022-01-03"},
        {
            "type": "buy",
            "ticker": "aapl",
            "quantity": "10",
            "price": "150",
            "fee": "1",
            "date": "2022-01-04",
        },
        {"type": "buy", "ticker": "AAPL", "quantity": "5", "price": "160", "date": "2022-02-01"},
        {"type": "sell", "ticker": "AAPL", "quantity": "12", "price": "170", "date": "2022-03-01"},
    ):
        response = await client.post(url, json=body, headers=user)
        assert response.status_code == 201, response.text
    positions = (
        await client.get(
            f"/api/v1/portfolio/{pid}/positions", params={"as_of": "2022-06-30"}, headers=user
        )
    ).json()
    (aapl,) = positions["positions"]
    assert D(aapl["quantity"]) == 3 and D(aapl["cost_basis"]) == D("480")
    # sold 10 @ 150.10 + 2 @ 160 = 1821 for 12 × 170 = 2040
    assert D(aapl["realised_pnl"]) == D("219")
    assert aapl["price_date"] <= "2022-06-30" and aapl["last_price"] > 0
    cash = D("10000") - D("1501") - D("800") + D("2040")
    assert D(positions["cash"]) == cash
    value = D(aapl["market_value"])
    assert value == D(3) * D(str(aapl["last_price"]))
    assert D(positions["market_value"]) == value + cash
    assert D(aapl["unrealised_pnl"]) == value - D("480")
    assert abs(aapl["weight"] - float(value / (value + cash))) < 1e-9

    oversold = await client.post(
        url,
        json={
            "type": "sell",
            "ticker": "AAPL",
            "quantity": "4",
            "price": "1",
            "date": "2022-04-01",
        },
        headers=user,
    )
    assert oversold.status_code == 422 and oversold.json()["code"] == "oversold"
    unknown = await client.post(
        url,
        json={"type": "buy", "ticker": "NOPE", "quantity": "1", "price": "1", "date": "2022-04-01"},
        headers=user,
    )
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_ticker"
    for bad in (
        {"type": "buy", "ticker": "AAPL", "quantity": "-1", "price": "1", "date": "2022-04-01"},
        {"type": "deposit", "ticker": "AAPL", "amount": "5", "date": "2022-04-01"},
        {"type": "buy", "ticker": "AAPL", "quantity": "1", "date": "2022-04-01"},
        {"type": "deposit", "amount": "5", "date": "2999-01-01"},
        {"type": "swap", "amount": "5", "date": "2022-04-01"},
    ):
        assert (await client.post(url, json=bad, headers=user)).status_code == 422, bad


async def test_an_idempotency_key_makes_a_retry_safe(client: httpx.AsyncClient) -> None:
    user = await sign_up(client, _user())
    pid = await _portfolio(client, user)
    url = f"/api/v1/portfolio/{pid}/transactions"
    body = {"type": "deposit", "amount": "100", "date": "2022-01-03"}
    key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    first = await client.post(url, json=body, headers={**user, **key})
    second = await client.post(url, json=body, headers={**user, **key})
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.headers["idempotent-replayed"] == "true" and second.json() == first.json()
    other = await client.post(url, json={**body, "amount": "999"}, headers={**user, **key})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
    page = (await client.get(url, headers=user)).json()
    assert page["total"] == 1


async def test_concurrent_sells_fill_exactly_what_is_held(client: httpx.AsyncClient) -> None:
    user = await sign_up(client, _user())
    pid = await _portfolio(client, user)
    url = f"/api/v1/portfolio/{pid}/transactions"
    await client.post(
        url,
        json={"type": "buy", "ticker": "KO", "quantity": "10", "price": "50", "date": "2022-01-04"},
        headers=user,
    )
    sell = {"type": "sell", "ticker": "KO", "quantity": "3", "price": "55", "date": "2022-02-01"}
    results = await asyncio.gather(*(client.post(url, json=sell, headers=user) for _ in range(8)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201] * 3 + [422] * 5  # 3 × 3 = 9 of 10 shares; a 4th would oversell
    positions = (await client.get(f"/api/v1/portfolio/{pid}/positions", headers=user)).json()
    assert D(positions["positions"][0]["quantity"]) == 1


async def test_another_users_portfolio_is_not_found_and_untouchable(
    client: httpx.AsyncClient,
) -> None:
    alice = await sign_up(client, _user())
    bob = await sign_up(client, _user())
    pid = await _portfolio(client, alice, "Alice's")
    base = f"/api/v1/portfolio/{pid}"
    for method, path, kwargs in (
        ("GET", "", {}),
        ("PATCH", "", {"json": {"name": "Mine now"}}),
        ("DELETE", "", {}),
        ("GET", "/positions", {}),
        ("GET", "/transactions", {}),
        ("GET", "/transactions/export", {}),
        (
            "POST",
            "/transactions",
            {"json": {"type": "deposit", "amount": "1", "date": "2022-01-03"}},
        ),
        (
            "POST",
            "/transactions/import",
            {"files": {"file": ("x.csv", b"date,type,amount\n2022-01-03,deposit,1\n")}},
        ),
    ):
        response = await client.request(method, base + path, headers=bob, **kwargs)
        assert response.status_code == 404, (method, path, response.status_code)
    assert (await client.get(base, headers=alice)).json()["name"] == "Alice's"
    assert (await client.get(f"/api/v1/portfolio/{pid}/transactions", headers=alice)).json()[
        "total"
    ] == 0
    assert [p["id"] for p in (await client.get("/api/v1/portfolio", headers=bob)).json()] == []
    assert (await client.get(base, headers=ANONYMOUS)).status_code == 401


async def test_portfolios_are_renamed_listed_deleted_and_names_unique(
    client: httpx.AsyncClient,
) -> None:
    user = await sign_up(client, _user())
    first = await _portfolio(client, user, "Growth")
    second = await _portfolio(client, user, "Income")
    dup = await client.post("/api/v1/portfolio", json={"name": "Growth"}, headers=user)
    assert dup.status_code == 409
    clash = await client.patch(f"/api/v1/portfolio/{second}", json={"name": "Growth"}, headers=user)
    assert clash.status_code == 409
    renamed = await client.patch(
        f"/api/v1/portfolio/{second}", json={"name": "Dividends"}, headers=user
    )
    assert renamed.json()["name"] == "Dividends"
    assert [p["name"] for p in (await client.get("/api/v1/portfolio", headers=user)).json()] == [
        "Growth",
        "Dividends",
    ]
    assert (await client.delete(f"/api/v1/portfolio/{first}", headers=user)).status_code == 204
    assert (await client.get(f"/api/v1/portfolio/{first}", headers=user)).status_code == 404


async def test_transactions_page_newest_first(client: httpx.AsyncClient) -> None:
    user = await sign_up(client, _user())
    pid = await _portfolio(client, user)
    url = f"/api/v1/portfolio/{pid}/transactions"
    for day in range(1, 8):
        await client.post(
            url,
            json={"type": "deposit", "amount": str(day), "date": f"2022-03-0{day}"},
            headers=user,
        )
    first = (await client.get(url, params={"limit": 3}, headers=user)).json()
    second = (await client.get(url, params={"limit": 3, "offset": 3}, headers=user)).json()
    last = (await client.get(url, params={"limit": 3, "offset": 6}, headers=user)).json()
    assert first["total"] == second["total"] == last["total"] == 7
    days = [t["date"] for t in first["items"] + second["items"] + last["items"]]
    assert days == sorted(days, reverse=True) and len(set(days)) == 7
    assert (await client.get(url, params={"limit": 0}, headers=user)).status_code == 422


async def test_csv_import_is_all_or_nothing_with_line_numbers_and_export_round_trips(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    user = await sign_up(client, _user())
    pid = await _portfolio(client, user)
    base = f"/api/v1/portfolio/{pid}/transactions"
    bad = (
        b"date,type,ticker,quantity,price,amount,fee,note\n"
        b"2022-01-03,deposit,,,,5000,,start\n"
        b"2022-01-04,buy,MSFT,10,300,,1,\n"
        b"2022-01-05,buy,MSFT,abc,300,,,\n"
        b"2022-01-06,teleport,,,,1,,\n"
    )
    response = await client.post(f"{base}/import", files={"file": ("t.csv", bad)}, headers=user)
    assert response.status_code == 422
    assert [e["line"] for e in response.json()["errors"]] == [4, 5]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM portfolio_transactions WHERE portfolio_id = $1", uuid.UUID(pid)
        )
        == 0
    )

    oversell = (
        b"date,type,ticker,quantity,price\n2022-01-04,buy,MSFT,1,300\n2022-01-05,sell,MSFT,2,310\n"
    )
    response = await client.post(
        f"{base}/import", files={"file": ("t.csv", oversell)}, headers=user
    )
    assert response.status_code == 422 and "line 3" in response.json()["detail"]

    good = bad.split(b"2022-01-05")[0] + b'2022-02-01,sell,MSFT,4,310,,,=HYPERLINK("x")\n'
    response = await client.post(f"{base}/import", files={"file": ("t.csv", good)}, headers=user)
    assert response.status_code == 201 and response.json() == {"imported": 3}
    exported = await client.get(f"{base}/export", headers=user)
    assert exported.headers["content-type"].startswith("text/csv")
    assert int(exported.headers["ratelimit-limit"]) > 0  # a route's own Response carries it too
    lines = exported.text.split("\r\n")
    assert lines[0] == '"date","type","ticker","quantity","price","amount","fee","note"'
    assert "\"'=HYPERLINK" in lines[3]  # exported notes never start a spreadsheet formula

    other = await _portfolio(client, user, "Copy")
    again = await client.post(
        f"/api/v1/portfolio/{other}/transactions/import",
        files={"file": ("t.csv", exported.content)},
        headers=user,
    )
    assert again.status_code == 201 and again.json() == {"imported": 3}
    a = (await client.get(f"/api/v1/portfolio/{pid}/positions", headers=user)).json()
    b = (await client.get(f"/api/v1/portfolio/{other}/positions", headers=user)).json()
    assert (a["cash"], a["positions"][0]["quantity"]) == (b["cash"], b["positions"][0]["quantity"])


async def test_api_keys_need_the_portfolio_scope(client: httpx.AsyncClient) -> None:
    user = await sign_up(client, _user())
    for scopes, expected in ((["read:market"], 403), (["write:portfolio"], 200)):
        key = await client.post(
            "/api/v1/users/me/api-keys", json={"name": "k", "scopes": scopes}, headers=user
        )
        response = await client.get(
            "/api/v1/portfolio", headers={**ANONYMOUS, "X-API-Key": key.json()["key"]}
        )
        assert response.status_code == expected, scopes


async def test_watchlists_hold_known_tickers_and_belong_to_their_owner(
    client: httpx.AsyncClient,
) -> None:
    alice = await sign_up(client, _user())
    bob = await sign_up(client, _user())
    created = await client.post(
        "/api/v1/portfolio/watchlists",
        json={"name": "Tech", "tickers": ["msft", "AAPL"]},
        headers=alice,
    )
    assert created.status_code == 201, created.text
    watchlist = created.json()
    assert watchlist["tickers"] == ["AAPL", "MSFT"]
    url = f"/api/v1/portfolio/watchlists/{watchlist['id']}"
    bad = await client.post(
        "/api/v1/portfolio/watchlists", json={"name": "Bad", "tickers": ["ZZZZ"]}, headers=alice
    )
    assert bad.status_code == 422 and bad.json()["code"] == "unknown_ticker"
    replaced = await client.put(url, json={"name": "Big tech", "tickers": ["GOOG"]}, headers=alice)
    assert replaced.json()["name"] == "Big tech" and replaced.json()["tickers"] == ["GOOG"]
    assert (await client.put(url, json={"name": "x"}, headers=bob)).status_code == 404
    assert (await client.delete(url, headers=bob)).status_code == 404
    assert (await client.get("/api/v1/portfolio/watchlists", headers=bob)).json() == []
    assert len((await client.get("/api/v1/portfolio/watchlists", headers=alice)).json()) == 1
    assert (await client.delete(url, headers=alice)).status_code == 204
