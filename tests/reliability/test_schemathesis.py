"""Schemathesis over the whole OpenAPI schema, signed in: no server errors, and every response is
what the schema documents (status code, content type, body schema, headers).

The real app — its lifespan, an in-process predictor over the session's tiny registry, and the
embedded Postgres and Redis — is served by uvicorn on a loopback port in its own thread, and
schemathesis sends real HTTP to it. Inputs come from the schema in every mode schemathesis has:
examples, boundary values ("coverage") and random data, valid and invalid, with a fixed seed and
a bounded number of random examples per operation.

The fuzzer writes whatever the API lets it write (imports, portfolios, alerts, ...), so the app
runs on a database of its own (the bundled data ingested afresh) and a Redis database of its own:
nothing it does can change what other tests see.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import schemathesis
from mlflow import MlflowClient
from redis.asyncio import Redis
from schemathesis.config import SchemathesisConfig

from api.app import create_app
from api.db.users import UserRepository
from api.security.crypto import Keyring
from api.services import similarity
from api.services.auth import AuthService, create_account
from api.settings import Settings
from pipelines.ingest import ingest_bundled
from serving.local import LocalPredictor
from tests.conftest import sign_up
from tests.live_server import serving_in_thread

FUZZ_DATABASE = "stockcopilot_fuzz"
FUZZ_REDIS_DB = 7
# Operations that would sign the shared fuzzing user out (or erase it) and turn every later case
# into a 401: each of their cases runs as a throwaway user of its own instead.
THROWAWAY_CALLER = {
    "POST /api/v1/auth/logout": "ends the caller's session",
    "DELETE /api/v1/users/me": "erases the caller's account",
    "DELETE /api/v1/users/me/sessions": "ends every session of the caller",
    "DELETE /api/v1/users/me/sessions/{session_id}": "may end the caller's own session",
}
THROWAWAYS = 200  # enough for every case of those operations at this seed

# What an attacker types, mixed into generated strings (query, path and body fields) at the given
# rate: NUL and other control characters, bidirectional overrides, unusual unicode, huge and tiny
# exponents as decimal strings, numbers as text, markup and a formula. Headers get only what HTTP
# can carry (an invalid header byte is refused by the HTTP server before any app sees it).
HOSTILE_STRINGS = [
    "\u0000",
    "AA\u0000PL",
    "\u202eexe.txt",
    "\u2066isolate\u2069",
    "\u001b[31m",
    "\u0085",
    "\ufeffbom",
    "\U0001f4a9\u0301",
    "1e-20000",
    "1e-17000",
    "1E+5",
    "-0",
    "9" * 400,
    "NaN",
    "Infinity",
    "<script>alert(1)</script>",
    '=HYPERLINK("x")',
    "\r\n=1+1",
]
HEADERS = ("X-API-Key", "Authorization", "Idempotency-Key")
HEADER_SAFE = [v for v in HOSTILE_STRINGS if v.isascii() and v.isprintable()]
HOSTILE = {"dictionary": "hostile", "probability": 0.3}
DOCUMENT = create_app(Settings()).openapi()  # building the app touches no service


def _text_fields(document: dict[str, Any]) -> set[str]:
    """Dotted paths (`note`, `notifications.email`, `tickers[*]`) of the string fields that
    JSON request bodies can hold."""
    schemas = document["components"]["schemas"]

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def walk(schema: dict[str, Any], path: str, depth: int = 0) -> set[str]:
        schema = resolve(schema)
        found: set[str] = set()
        for option in schema.get("anyOf", []) + schema.get("oneOf", []):
            found |= walk(option, path, depth)
        if schema.get("type") == "string" and path:
            found.add(path)
        if schema.get("type") == "array" and "items" in schema and depth < 3:
            found |= walk(schema["items"], f"{path}[*]", depth + 1)
        for name, field in schema.get("properties", {}).items():
            if depth < 3 and name.replace("_", "").isalnum():
                found |= walk(field, f"{path}.{name}" if path else name, depth + 1)
        return found

    fields: set[str] = set()
    for item in document["paths"].values():
        for operation in item.values():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                fields |= walk(content["application/json"]["schema"], "")
    return fields


CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20260101,
        "dictionaries": {
            "hostile": {"values": HOSTILE_STRINGS},
            "header-safe": {"values": HEADER_SAFE},
        },
        "parameters": {
            **{f"header.{h}": {"dictionary": "header-safe", "probability": 0.3} for h in HEADERS},
            # every text field of every JSON body, nested ones and list items included
            **{f"body.{path}": HOSTILE for path in sorted(_text_fields(DOCUMENT))},
        },
        # random examples per operation, on top of the schema's examples and boundary values
        "generation": {
            "max-examples": 5,
            "deterministic": True,
            "allow-x00": True,
            "codec": "utf-8",
            "dictionaries": {"string": HOSTILE},
        },
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            # Both expect the schema to encode every rule. Here the rules past the schema — a
            # made-up reset token, an unknown indicator name, a CSV's rows, a time zone — are
            # refused with a documented 4xx problem (status conformance checks that), and
            # lenient parsing (`false` given as `0`) is accepted.
            "positive_data_acceptance": {"enabled": False},
            "negative_data_rejection": {"enabled": False},
        },
        "operations": [
            {
                # a concrete path beside a templated sibling: other methods reach the sibling
                # (`PATCH /portfolio/watchlists` is `PATCH /portfolio/{portfolio_id}` with an
                # invalid id, a 422) rather than a 405 — FastAPI has no typed path converters
                "include-path-regex": "^/api/v1/(portfolio/watchlists|users/me/notifications"
                "/read|predictions/batch)$",
                "checks": {"unsupported_method": {"enabled": False}},
            }
        ],
    }
)

# The schema the served app publishes (building the app touches no service); requests go to the
# live server at call time.
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
# Operations only an administrator may call (as the document says): sent with an administrator's
# session.
ADMIN_ONLY = {
    f"{method.upper()} {path}"
    for path, item in schema.raw_schema["paths"].items()
    for method, operation in item.items()
    if operation.get("x-access") == "admin"
}


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


@pytest.fixture(scope="module")
async def fuzz_settings(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Settings]:
    """The session's servers, with a database and a Redis keyspace for the fuzzer alone: the
    bundled data, and similarity windows of every size (a few tickers), so no route answers 503
    for want of set-up."""
    await pool.execute(f"DROP DATABASE IF EXISTS {FUZZ_DATABASE} WITH (FORCE)")
    await pool.execute(f"CREATE DATABASE {FUZZ_DATABASE}")
    database_url = _with_path(settings.database_url or "", f"/{FUZZ_DATABASE}")
    await ingest_bundled(database_url, show_progress=False)
    conn = await asyncpg.connect(database_url)
    try:
        for window in similarity.WINDOWS:
            await similarity.build(conn, window, ["KO", "AAPL"])
    finally:
        await conn.close()
    redis_url = f"{settings.redis_url}?db={FUZZ_REDIS_DB}"
    yield settings.model_copy(update={"database_url": database_url, "redis_url": redis_url})
    await pool.execute(f"DROP DATABASE IF EXISTS {FUZZ_DATABASE} WITH (FORCE)")


@pytest.fixture(scope="module")
def fuzz_server(fuzz_settings: Settings, serving_registry: MlflowClient) -> Iterator[str]:
    app = create_app(fuzz_settings, LocalPredictor(serving_registry))
    with serving_in_thread(app) as address:
        yield f"http://{address}"


@dataclass(frozen=True)
class Callers:
    base_url: str
    user: dict[str, str]
    admin: dict[str, str]
    throwaway: list[dict[str, str]]  # sessions of accounts made for one case each

    def one_off(self) -> dict[str, str]:
        assert self.throwaway, "raise THROWAWAYS: the generator made more cases"
        return self.throwaway.pop()


async def _minted_sessions(settings: Settings, count: int) -> list[dict[str, str]]:
    """Signed-in accounts without a password, made through the repositories and AuthService:
    an argon2 hash per throwaway caller would cost more than the case it serves."""
    keyring = Keyring.from_settings(settings)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    redis = Redis.from_url(settings.redis_url or "", decode_responses=True)
    auth = AuthService(pool, redis, settings, keyring)
    try:
        sessions = []
        for _ in range(count):
            email = f"fuzz-once-{uuid.uuid4().hex}@example.com"
            user = await create_account(UserRepository(pool), keyring, email, "Once", None)
            pair = await auth.start_session(user, "schemathesis", None)
            sessions.append({"Authorization": f"Bearer {pair.access_token}"})
        return sessions
    finally:
        await redis.aclose()
        await pool.close()


@pytest.fixture(scope="module")
async def callers(fuzz_server: str, fuzz_settings: Settings) -> Callers:
    """A fuzzing user, an administrator, and throwaway sessions."""
    async with httpx.AsyncClient(base_url=fuzz_server, timeout=30) as client:
        user = await sign_up(client, "fuzz@example.com")
        admin_email = "fuzz-admin@example.com"
        me = await client.get("/api/v1/users/me", headers=await sign_up(client, admin_email))
        conn = await asyncpg.connect(fuzz_settings.database_url)
        try:
            await conn.execute(
                "UPDATE users SET role = 'admin' WHERE id = $1", uuid.UUID(me.json()["id"])
            )
        finally:
            await conn.close()
        admin = await sign_up(client, admin_email)  # a token carrying the role
    return Callers(fuzz_server, user, admin, await _minted_sessions(fuzz_settings, THROWAWAYS))


@schema.parametrize()
def test_every_operation_answers_as_documented(case: schemathesis.Case, callers: Callers) -> None:
    label = f"{case.method.upper()} {case.path}"
    if label in THROWAWAY_CALLER:
        headers = callers.one_off()
    elif label in ADMIN_ONLY:
        headers = callers.admin
    else:
        headers = callers.user
    case.call_and_validate(base_url=callers.base_url, headers=headers, timeout=60)


PATH_VALUES = {"{ticker}": "AAPL", "{name}": "openai_api_key", "{provider}": "github"}
HOSTILE_BODY_VALUES = ["AA\u0000PL", "\u202eevil", "\ud800", "1e-20000", "9" * 400, "\u0007"]


def _with(value: Any, path: list[str], replacement: Any) -> Any:
    if not path:
        return replacement
    head, *rest = path
    if isinstance(value, dict) and head in value:
        return {**value, head: _with(value[head], rest, replacement)}
    if isinstance(value, list) and value and head == "[*]":
        return [_with(value[0], rest, replacement), *value[1:]]
    return value


def _leaves(value: Any, path: list[str]) -> list[list[str]]:
    """Paths of the string leaves of a JSON example."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _leaves(item, [*path, key])]
    if isinstance(value, list) and value:
        return _leaves(value[0], [*path, "[*]"])
    return []


def test_every_text_field_of_every_example_body_refuses_hostile_text(callers: Callers) -> None:
    """Deterministic, beside the fuzzer: each string of each documented example body replaced
    by each hostile value, on every operation that takes JSON, must answer a documented 4xx."""
    seen = 0
    with httpx.Client(base_url=callers.base_url, timeout=60) as client:
        for template, item in DOCUMENT["paths"].items():
            path = re.sub(
                r"\{[a-z_]+\}", lambda m: PATH_VALUES.get(m.group(), f"{uuid.uuid4()}"), template
            )
            for method, operation in item.items():
                content = operation.get("requestBody", {}).get("content", {})
                body = content.get("application/json", {}).get("schema", {})
                examples = _examples(body)
                label = f"{method.upper()} {template}"
                headers = callers.admin if label in ADMIN_ONLY else callers.user
                if label in THROWAWAY_CALLER:
                    continue
                for example in examples:
                    for leaf in _leaves(example, []):
                        for hostile in HOSTILE_BODY_VALUES:
                            sent = json.dumps(_with(example, leaf, hostile))
                            response = client.request(
                                method,
                                path,
                                content=sent,
                                headers={**headers, "content-type": "application/json"},
                            )
                            seen += 1
                            assert response.status_code < 500, (label, leaf, hostile)
                            if "\u0000" in hostile or "\ud800" in hostile:
                                assert response.status_code in (401, 403, 404, 422), (label, leaf)
    assert seen > 300


def _examples(schema: dict[str, Any]) -> list[Any]:
    while "$ref" in schema:
        schema = DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return list(schema.get("examples", []))
