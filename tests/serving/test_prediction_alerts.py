"""Forecast alerts, evaluated by the feed against the same predictor the API serves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date

import asyncpg
import httpx
from mlflow import MlflowClient
from redis.asyncio import Redis

from api.cache import JsonCache
from api.services.ab import ChallengerWeights
from api.services.prediction_log import PredictionLog
from api.services.predictions import PredictionService
from serving.local import LocalPredictor
from tests.serving.conftest import Caller
from tests.utils import play

DAY = date(2022, 12, 28)


async def test_prediction_alerts_fire_on_the_forecast_the_owner_is_served(
    api: httpx.AsyncClient,
    redis: Redis,
    pool: asyncpg.Pool,
    serving_registry: MlflowClient,
    mint_user: Callable[[], Awaitable[Caller]],
) -> None:
    _, headers = await mint_user()
    body = {"kind": "prediction", "ticker": "KO", "horizon": 1, "model": "lstm"}
    fires = await api.post(
        "/api/v1/users/me/alerts",
        headers=headers,
        json={**body, "direction": "above", "prob_up": 0.01},
    )
    never = await api.post(
        "/api/v1/users/me/alerts",
        headers=headers,
        json={**body, "direction": "below", "prob_up": 0.01},
    )
    assert fires.status_code == never.status_code == 201, fires.text

    prediction_log = PredictionLog(pool)
    predictions = PredictionService(
        pool,
        LocalPredictor(serving_registry),
        JsonCache(redis, "pred:v1", 60),
        prediction_log,
        ChallengerWeights(pool),
    )
    await play(pool, redis, DAY, predictions=predictions)
    await prediction_log.close()

    (note,) = (await api.get("/api/v1/users/me/notifications", headers=headers)).json()["items"]
    assert note["data"]["alert_id"] == fires.json()["id"]
    served = await api.get(
        "/api/v1/predictions/KO",
        params={"horizon": 1, "model": "lstm", "as_of": str(DAY)},
        headers=headers,
    )
    assert note["data"]["value"] == served.json()["prob_up"]  # the very forecast the user sees
    assert "P(up over 1d)" in note["title"]
    states = {
        a["id"]: a["last_state"]
        for a in (await api.get("/api/v1/users/me/alerts", headers=headers)).json()
    }
    assert states == {fires.json()["id"]: True, never.json()["id"]: False}
