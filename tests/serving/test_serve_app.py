"""The Ray Serve application end to end: HTTP through the Serve proxy into model deployments."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import asyncpg
import httpx
import mlflow
import pandas as pd
import pytest
import ray
from mlflow import MlflowClient
from ray import serve
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from api.security.crypto import Keyring
from api.settings import Settings
from tests.api.test_ws import receive
from tests.conftest import PASSWORD
from tests.serving.conftest import last_rollback, next_notification
from tests.utils import play
from training import registry
from training.pyfunc import ForecasterModel

pytestmark = pytest.mark.slow


def test_replicas_run_in_the_installed_environment(serve_url: str) -> None:
    """Under `uv run` (as `make test` and `make up` start us), Ray would by default run each
    worker in a packaged copy of the working directory with a virtual environment of its own,
    where git-ignored files such as the registry under mlruns/ do not exist."""

    @ray.remote(num_cpus=0)
    def where() -> tuple[str, str]:
        return os.getcwd(), sys.executable

    assert ray.get(where.remote(), timeout=60) == (os.getcwd(), sys.executable)


async def test_the_serve_proxy_believes_no_forwarding_header_by_default(
    serve_url: str, settings: Settings, pool: asyncpg.Pool
) -> None:
    """Serve's uvicorn trusts X-Forwarded-For from loopback unless told otherwise, which would let
    any local client pick its own rate-limit address; `start_local_ray` tells it whom to trust
    (nobody, by default)."""
    email = f"xff-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=serve_url, timeout=60) as client:
        await client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "display_name": "X"},
        )
        refused = await client.post(
            "/api/v1/auth/login",
            json={"email": email, "password": "not the password at all"},
            headers={"X-Forwarded-For": "203.0.113.77"},
        )
    assert refused.status_code == 401
    keyring = Keyring.from_settings(settings)
    seen = await pool.fetchval(
        "SELECT ip_hash FROM security_events WHERE event = 'login_failed' ORDER BY id DESC LIMIT 1"
    )
    assert seen == keyring.blind_index("ip:127.0.0.1")[:32]  # the peer, not the claimed address
    assert seen != keyring.blind_index("ip:203.0.113.77")[:32]


def test_predictions_through_the_serve_proxy(serve_url: str, user_headers: dict[str, str]) -> None:
    lstm = httpx.get(
        f"{serve_url}/api/v1/predictions/MSFT",
        params={"model": "lstm", "horizon": 20, "as_of": "2022-03-01"},
        headers=user_headers,
        timeout=60,
    )
    assert lstm.status_code == 200, lstm.text
    body = lstm.json()
    assert body["model"] == {"family": "lstm", "version": "1", "variant": "champion"}
    assert body["quantiles"]["p10"] < body["quantiles"]["p90"]
    ensemble = httpx.get(
        f"{serve_url}/api/v1/predictions/XOM",
        params={"model": "ensemble", "as_of": "2022-02-01"},
        headers=user_headers,
        timeout=60,
    )
    assert ensemble.status_code == 200, ensemble.text
    assert ensemble.json()["model"]["family"] == "ensemble"
    batch = httpx.post(
        f"{serve_url}/api/v1/predictions/batch",
        json={
            "tickers": ["AAPL", "JPM"],
            "model": "transformer",
            "horizon": 1,
            "as_of": "2022-04-01",
        },
        headers=user_headers,
        timeout=60,
    )
    assert batch.status_code == 200 and len(batch.json()["predictions"]) == 2


def test_the_classical_family_answers_through_the_serve_graph_by_default(
    serve_url: str, user_headers: dict[str, str], serving_registry: MlflowClient
) -> None:
    """No model named: the classical champion answers (GarchForecaster replica, numpy only), with
    the forecast the registered bundle gives in-process; the ensemble combines it too."""
    answer = httpx.get(
        f"{serve_url}/api/v1/predictions/KO",
        params={"horizon": 5, "as_of": "2022-06-01"},
        headers=user_headers,
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == {"family": "garch", "version": "1", "variant": "champion"}
    assert body["quantiles"]["p10"] < body["quantiles"]["p50"] < body["quantiles"]["p90"]
    bundle = registry.load_bundle("models:/stockcopilot-garch@champion")
    assert "KO" in bundle.params  # fitted on KO itself, not the pooled fallback
    batch = httpx.post(
        f"{serve_url}/api/v1/predictions/batch",
        json={"tickers": ["KO", "XOM"], "model": "garch", "horizon": 20, "as_of": "2022-06-01"},
        headers=user_headers,
        timeout=60,
    )
    assert batch.status_code == 200, batch.text
    five_day, twenty_day = body["quantiles"], batch.json()["predictions"][0]["quantiles"]
    # a longer horizon: a wider band around the same price
    assert twenty_day["p90"] - twenty_day["p10"] > five_day["p90"] - five_day["p10"]


@pytest.fixture(scope="module")
def moved(
    serve_url: str,
    serving_registry: MlflowClient,
    registry_root: Path,
) -> tuple[str, str]:
    """Register a new lstm version and move `champion` to it behind serving's back (as the
    MLflow UI would). Returns (old, new) versions."""
    old = registry.alias_version(serving_registry, "lstm", "champion")
    bundle = registry.load_bundle("models:/stockcopilot-lstm@champion")
    registry.experiment("lstm")
    with mlflow.start_run():
        uri = registry.log_bundle(bundle, registry_root / "lstm-moved")
    new = registry.register(uri, "lstm")
    serving_registry.set_registered_model_alias("stockcopilot-lstm", "champion", new)
    assert old is not None
    return old, new


def test_alias_moved_in_the_registry_is_followed(
    serve_url: str, moved: tuple[str, str], user_headers: dict[str, str]
) -> None:
    new_version = moved[1]
    deadline, seen, day = time.monotonic() + 30, None, 1
    while time.monotonic() < deadline:
        # a different as-of date each time, so the answer never comes from the cache
        response = httpx.get(
            f"{serve_url}/api/v1/predictions/KO",
            params={"model": "lstm", "as_of": f"2021-03-{day:02d}"},
            headers=user_headers,
            timeout=60,
        )
        assert response.status_code in (200, 422), response.text
        if response.status_code == 200:
            seen = response.json()["model"]["version"]
            if seen == new_version:
                break
        day = day % 28 + 1
        time.sleep(1)
    assert seen == new_version


async def test_observed_switch_is_written_to_the_alias_history(
    serve_url: str, pool: asyncpg.Pool, moved: tuple[str, str]
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = await pool.fetchrow(
            "SELECT from_version, to_version, actor FROM model_alias_events "
            "WHERE model = 'stockcopilot-lstm' AND alias = 'champion' ORDER BY id DESC LIMIT 1"
        )
        if row is not None:
            break
        await asyncio.sleep(1)
    assert row is not None and row["actor"] == "serving"
    assert (row["from_version"], row["to_version"]) == moved


async def test_the_switch_is_announced_once_for_the_notification_stream(
    serve_url: str, settings: Settings, moved: tuple[str, str]
) -> None:
    """Every replica sees the move; one of them announces it (a Redis once-key)."""
    redis = Redis.from_url(settings.redis_url or "", decode_responses=True)
    try:
        deadline, keys = time.monotonic() + 30, []
        while time.monotonic() < deadline and not keys:
            keys = await redis.keys(f"announced:stockcopilot-lstm:champion:{moved[0]}->{moved[1]}")
            await asyncio.sleep(0.5)
    finally:
        await redis.aclose()
    assert len(keys) == 1


async def test_sockets_through_the_serve_proxy(
    serve_url: str, redis: Redis, pool: asyncpg.Pool, user_headers: dict[str, str]
) -> None:
    """Quotes and refreshed forecasts reach sockets held by the ingress replica, fed by the
    market feed through Redis pub/sub."""
    token = user_headers["Authorization"].removeprefix("Bearer ")
    base = serve_url.replace("http://", "ws://")
    day = date(2022, 12, 27)
    async with (
        connect(f"{base}/ws/real-time?token={token}") as quotes,
        connect(f"{base}/ws/predictions?token={token}") as forecasts,
    ):
        await quotes.send(json.dumps({"action": "subscribe", "tickers": ["KO"]}))
        await forecasts.send(
            json.dumps({"action": "subscribe", "tickers": ["KO"], "horizon": 1, "model": "lstm"})
        )
        await receive(quotes, "subscribed", 60)
        await receive(forecasts, "prediction", 120)  # the current forecast, straight away
        await play(pool, redis, day, alerts=False)
        for _ in range(5):  # the live quote (the subscription's snapshot may come first)
            quote = await receive(quotes, "quote", 60)
            if quote["date"] == str(day):
                break
        assert (quote["ticker"], quote["date"]) == ("KO", str(day))
        for _ in range(5):  # the refresh for `day` (a snapshot may still be in flight)
            forecast = await receive(forecasts, "prediction", 120)
            if forecast["as_of"] == str(day):
                break
        assert forecast["as_of"] == str(day) and forecast["ticker"] == "KO"
        assert forecast["model"]["family"] == "lstm" and forecast["horizon"] == 1


def _lstm_replicas() -> list[str]:
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "LstmForecaster" in a["name"] and a["name"].startswith("SERVE_REPLICA")
    )


def _running(deployment: str, starting: bool = False) -> int:
    """Replicas running (and, with `starting`, those the autoscaler has started)."""
    states = serve.status().applications["stockcopilot"].deployments[deployment].replica_states
    return int(states.get("RUNNING", 0)) + (int(states.get("STARTING", 0)) if starting else 0)


def test_a_killed_replica_is_replaced_while_requests_succeed(
    serve_url: str, user_headers: dict[str, str]
) -> None:
    replicas = _lstm_replicas()
    assert len(replicas) >= 2
    ray.kill(ray.get_actor(replicas[0], namespace="serve"), no_restart=True)
    statuses = []
    for day in range(1, 21):  # distinct as-of dates: every request reaches a model replica
        response = httpx.get(
            f"{serve_url}/api/v1/predictions/JPM",
            params={"model": "lstm", "as_of": f"2020-06-{day:02d}"},
            headers=user_headers,
            timeout=60,
        )
        statuses.append(response.status_code)
    assert statuses == [200] * 20

    def replaced() -> bool:
        return replicas[0] not in _lstm_replicas() and _running("LstmForecaster") >= 2

    deadline = time.monotonic() + 150  # health checks, then a replica start importing torch
    while not (done := replaced()) and time.monotonic() < deadline:
        time.sleep(1)
    assert done  # judged once, on the same reading that ended the wait


async def _load(url: str, headers: dict[str, str], stop: asyncio.Event, workers: int = 12) -> int:
    """Loopback load on uncached hybrid predictions until `stop` is set; returns requests sent."""
    dates = pd.bdate_range("2020-01-02", "2022-12-28")
    combos = iter([(t, d) for d in dates for t in ("AAPL", "KO", "XOM", "JPM", "MSFT")])
    sent = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        for ticker, day in combos:
            if stop.is_set():
                return
            await client.get(
                f"{url}/api/v1/predictions/{ticker}",
                params={"model": "hybrid", "as_of": str(day.date())},
            )
            sent += 1

    async with httpx.AsyncClient(timeout=60, headers=headers) as client:
        await asyncio.gather(*(worker(client) for _ in range(workers)))
    return sent


async def test_autoscaling_adds_a_replica_under_load_and_removes_it_after(
    serve_url: str, user_headers: dict[str, str]
) -> None:
    assert _running("HybridForecaster") == 1
    stop = asyncio.Event()
    load = asyncio.create_task(_load(serve_url, user_headers, stop))
    peak, deadline = 1, time.monotonic() + 90  # bounded: at most 90 s of load
    while time.monotonic() < deadline and peak < 2:
        await asyncio.sleep(1)
        peak = max(peak, _running("HybridForecaster", starting=True))
    stop.set()
    sent = await load
    assert peak >= 2, f"no scale-out after {sent} requests"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and _running("HybridForecaster") > 1:  # noqa: ASYNC110 - polls Serve
        await asyncio.sleep(2)
    assert _running("HybridForecaster") == 1


async def test_a_version_that_fails_to_load_is_rolled_back_while_requests_succeed(
    serve_url: str,
    serving_registry: MlflowClient,
    registry_root: Path,
    pool: asyncpg.Pool,
    settings: Settings,
    user_headers: dict[str, str],
) -> None:
    good = registry.alias_version(serving_registry, "transformer", "champion")
    broken_dir = registry_root / "broken-bundle"
    broken_dir.mkdir()  # no bundle.json and no weights: loading this model must fail
    registry.experiment("transformer")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ForecasterModel(),
            artifacts={"bundle": str(broken_dir)},
            pip_requirements=["stock-copilot"],
        )
    broken = registry.register(info.model_uri, "transformer")
    redis = Redis.from_url(settings.redis_url or "")
    notifications = redis.pubsub()
    await notifications.subscribe("notifications:models")
    serving_registry.set_registered_model_alias("stockcopilot-transformer", "champion", broken)

    deadline, day, answered = time.monotonic() + 40, 1, []
    while time.monotonic() < deadline:
        async with httpx.AsyncClient(timeout=60, headers=user_headers) as client:
            response = await client.get(
                f"{serve_url}/api/v1/predictions/XOM",
                params={"model": "transformer", "as_of": f"2019-07-{day:02d}"},
            )
        assert response.status_code == 200, response.text
        answered.append(response.json()["model"]["version"])
        if registry.alias_version(serving_registry, "transformer", "champion") == good:
            break
        day = day % 28 + 1
        await asyncio.sleep(1)
    assert registry.alias_version(serving_registry, "transformer", "champion") == good
    assert set(answered) == {good}
    event = await last_rollback(pool, "transformer", broken)
    assert (event["from_version"], event["to_version"]) == (broken, good)
    assert "failed to load" in event["reason"]
    message = await next_notification(notifications, redis)
    assert message is not None and message["type"] == "model_rollback"
