"""What the schemathesis run found, pinned down as plain examples (the fuzzer's inputs vary with
its version and seed; these do not)."""

from __future__ import annotations

import httpx


async def test_dates_pandas_cannot_hold_are_refused_not_crashing(client: httpx.AsyncClient) -> None:
    # was: 500 (pandas' nanosecond timestamps end in 1677), and a deposit dated 0001-01-01 made
    # the portfolio's performance answer 500 for good
    made = await client.post("/api/v1/portfolio", json={"name": "Ancient"})
    transactions = f"/api/v1/portfolio/{made.json()['id']}/transactions"
    for day in ("0001-01-01", "1677-09-21", "2262-04-12"):
        deposit = {"type": "deposit", "amount": "10", "date": day}
        refused = await client.post(transactions, json=deposit)
        assert refused.status_code == 422 and "dates must lie between" in refused.text
    early = {"type": "deposit", "amount": "10", "date": "1900-01-02"}
    assert (await client.post(transactions, json=early)).status_code == 201
    performance = await client.get(f"/api/v1/portfolio/{made.json()['id']}/performance")
    assert performance.status_code == 200  # valued on NYSE sessions since 1900
    indicators = await client.get(
        "/api/v1/analysis/AAPL/indicators", params={"names": "rsi_14", "start": "0408-10-29"}
    )
    assert indicators.status_code == 422


async def test_dates_are_iso_days_not_timestamps(client: httpx.AsyncClient) -> None:
    # was: `start=0` read as 1970-01-01 (a Unix timestamp)
    lenient = await client.get("/api/v1/stocks/AAPL/history", params={"start": "0"})
    assert lenient.status_code == 422 and "YYYY-MM-DD" in lenient.json()["detail"]
    iso = await client.get("/api/v1/stocks/AAPL/history", params={"start": "2022-12-01"})
    assert iso.status_code == 200 and iso.json()["start"] == "2022-12-01"


async def test_405_lists_every_method_of_the_resource(client: httpx.AsyncClient) -> None:
    # was: only the methods of the first route matching the path
    me = await client.request("PUT", "/api/v1/users/me")
    assert me.status_code == 405
    assert me.headers["Allow"] == "DELETE, GET, PATCH"  # HEAD is not served, so not offered
    head = await client.head("/api/v1/users/me")
    assert head.status_code == 405 and "HEAD" not in head.headers["Allow"]
    batch = await client.get("/api/v1/predictions/batch/x")  # no such resource at all
    assert batch.status_code == 404
    read = await client.get("/api/v1/users/me/notifications/read")  # a concrete path
    assert read.status_code == 405 and read.headers["Allow"] == "POST"


async def test_errors_are_documented_as_problem_json(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    responses = schema["paths"]["/api/v1/portfolio/{portfolio_id}/transactions"]["post"][
        "responses"
    ]
    assert set(responses) == {
        *("200", "201", "400", "401", "403", "404", "409", "413", "422", "429", "503")
    }
    problem = {"$ref": "#/components/schemas/Problem"}
    assert responses["422"]["content"] == {"application/problem+json": {"schema": problem}}
    assert "HTTPValidationError" not in schema["components"]["schemas"]


async def test_paging_offsets_beyond_any_page_are_422(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    # was: 500, the offset overflowed Postgres' bigint (found with the hostile dictionary)
    huge = {"offset": "851063331430980836910834405867520"}
    chats = await client.get("/api/v1/chat/conversations", params=huge)
    assert chats.status_code == 422 and chats.json()["errors"][0]["loc"] == ["query", "offset"]
    users = await client.get("/api/v1/users", params=huge, headers=admin_headers)
    assert users.status_code == 422
