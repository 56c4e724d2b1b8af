"""GET/POST /api/v1/predictions through the in-process predictor over a real MLflow registry."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest
from mlflow import MlflowClient
from redis.asyncio import Redis

from api.cache import JsonCache
from api.db.clock import MarketClockRepository
from api.db.models import AliasEvent, AliasEventRepository
from api.services.ab import ChallengerWeights
from api.services.auth import Principal
from api.services.chat.tools import ChatTools
from api.services.market import MarketService
from api.services.market_data import MarketDataService
from api.services.prediction_log import PredictionLog
from api.services.predictions import PredictionService, prob_up
from api.settings import Settings
from contracts import FAMILIES
from serving.local import LocalPredictor
from tests.api.test_market_clock import assert_bounded, replay_day, replaying
from tests.serving.conftest import Caller
from tests.utils import eventually


async def test_prediction_names_model_and_gives_ordered_price_bands(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/predictions/AAPL", params={"horizon": 5, "model": "lstm"})
    assert response.status_code == 200, response.text
    assert len(response.headers.get_list("ratelimit-limit")) == 1  # once, sent as cached JSON
    body = response.json()
    assert body["ticker"] == "AAPL" and body["as_of"] == "2022-12-28" and body["horizon"] == 5
    q = body["quantiles"]
    assert q["p10"] < q["p50"] < q["p90"]
    lr = body["log_return_quantiles"]
    assert q["p50"] == pytest.approx(body["last_close"] * math.exp(lr["q50"]))
    assert 0 <= body["prob_up"] <= 1
    assert body["prob_up"] == pytest.approx(prob_up(lr["q10"], lr["q50"], lr["q90"]))
    assert body["model"] == {"family": "lstm", "version": "1", "variant": "champion"}
    assert "random walk" in body["skill"]["verdict"]


async def test_the_classical_family_is_the_default_model(api: httpx.AsyncClient) -> None:
    """No network has beaten GARCH on the yardstick, so it serves a request naming no model."""
    body = (await api.get("/api/v1/predictions/KO")).json()
    assert body["model"]["family"] == "garch" and body["horizon"] == 5


async def test_as_of_predicts_from_bars_up_to_that_date(api: httpx.AsyncClient) -> None:
    body = (
        await api.get(
            "/api/v1/predictions/XOM",
            params={"as_of": "2021-07-04", "model": "hybrid", "horizon": 20},
        )
    ).json()
    assert body["as_of"] == "2021-07-02"  # the last bar on or before a holiday weekend


async def test_cache_hit_is_served_without_recomputing(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    params = {"horizon": 1, "model": "transformer"}
    first = (await api.get("/api/v1/predictions/JPM", params=params)).json()
    key = f"pred:v1:JPM:1:transformer:{first['model']['version']}:{first['as_of']}:0"  # real clock
    redis = Redis.from_url(settings.redis_url or "")
    assert await redis.exists(key) == 1
    # overwrite the cached value: a hit must return it verbatim
    import json

    cached = json.loads(await redis.get(key))
    cached["prob_up"] = 0.123456
    await redis.set(key, json.dumps(cached))
    await redis.aclose()
    second = (await api.get("/api/v1/predictions/JPM", params=params)).json()
    assert second["prob_up"] == 0.123456


async def test_batch_predicts_every_ticker_in_one_call(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/predictions/batch",
        json={"tickers": ["AAPL", "KO", "MSFT"], "horizon": 20, "model": "ensemble"},
    )
    assert response.status_code == 200
    got = response.json()["predictions"]
    assert [p["ticker"] for p in got] == ["AAPL", "KO", "MSFT"]
    assert all(p["horizon"] == 20 for p in got)


async def test_imported_ticker_is_predicted_by_the_global_model(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    history = (
        await api.get(
            "/api/v1/stocks/KO/history", params={"start": "2020-01-01", "end": "2022-12-28"}
        )
    ).json()["bars"]
    csv = "date,close\n" + "".join(f"{b['date']},{b['close']}\n" for b in history)
    imported = await api.post(
        "/api/v1/admin/bars/import",
        params={"ticker": "KOCOPY"},
        files={"file": ("ko.csv", csv.encode(), "text/csv")},
        headers=admin_headers,
    )
    assert imported.status_code == 201, imported.text
    body = (await api.get("/api/v1/predictions/KOCOPY", params={"model": "lstm"})).json()
    assert body["ticker"] == "KOCOPY" and body["quantiles"]["p10"] < body["quantiles"]["p90"]


async def test_ab_split_is_sticky_per_user_and_near_the_weight(
    api: httpx.AsyncClient, mint_user: Callable[[], Awaitable[Caller]]
) -> None:
    variants, users = [], []
    for _ in range(120):
        _, headers = await mint_user()
        response = await api.get(
            "/api/v1/predictions/AAPL", params={"model": "hybrid", "horizon": 1}, headers=headers
        )
        variants.append(response.json()["model"]["variant"])
        users.append(headers)
    share = variants.count("challenger") / len(variants)
    assert 0.35 < share < 0.65  # weight 0.5; 120 users put 3 sigma at about ±0.14
    again = await api.get(
        "/api/v1/predictions/AAPL", params={"model": "hybrid", "horizon": 1}, headers=users[7]
    )
    assert again.json()["model"]["variant"] == variants[7]  # the same user, the same variant
    spoof = await api.get(
        "/api/v1/predictions/AAPL",
        params={"model": "hybrid", "horizon": 1},
        headers={**users[7], "X-Client-Id": "someone-else-entirely"},
    )
    assert spoof.json()["model"]["variant"] == variants[7]  # a header cannot pick the variant
    champion = await api.get("/api/v1/predictions/AAPL", params={"model": "lstm"}, headers=users[7])
    assert champion.json()["model"]["variant"] == "champion"  # lstm has no challenger


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/api/v1/predictions/NOPE", {}, 404, "ticker_not_found"),
        ("/api/v1/predictions/AAPL", {"horizon": 3}, 422, "validation_error"),
        ("/api/v1/predictions/AAPL", {"model": "gpt"}, 422, "validation_error"),
        ("/api/v1/predictions/AAPL/history", {"horizon": 2}, 422, "validation_error"),
        ("/api/v1/predictions/AAPL", {"as_of": "1980-01-01"}, 422, "no_bars"),
    ],
)
async def test_bad_requests_are_clear(
    api: httpx.AsyncClient, path: str, params: dict, status: int, code: str
) -> None:
    response = await api.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    if code != "validation_error":  # a refusal still tells where the rate budget stands
        assert "ratelimit-remaining" in response.headers
    if code == "validation_error":  # GET checks the same shared types as POST /batch
        assert any(word in response.json()["detail"] for word in ("1, 5 or 20", "'garch'"))


async def test_too_many_tickers_and_too_little_history(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    many = await api.post(
        "/api/v1/predictions/batch", json={"tickers": [f"T{i}" for i in range(101)]}
    )
    assert many.status_code == 422
    short = await api.post(
        "/api/v1/admin/bars/import",
        params={"ticker": "TINY"},
        files={"file": ("t.csv", b"date,close\n2022-01-03,5\n", "text/csv")},
        headers=admin_headers,
    )
    assert short.status_code == 201
    response = await api.get("/api/v1/predictions/TINY", params={"model": "lstm"})
    assert response.status_code == 422 and response.json()["code"] == "not_enough_history"


async def test_without_a_predictor_predictions_are_503(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/predictions/AAPL")
    assert response.status_code == 503 and response.json()["code"] == "model_not_deployed"


def test_prob_up_matches_the_quantiles() -> None:
    assert prob_up(-0.01, 0.0, 0.01) == pytest.approx(0.5)
    assert prob_up(0.0, 0.01, 0.02) == pytest.approx(0.9)  # q10 at zero: 90 % above
    assert prob_up(-0.02, -0.01, 0.0) == pytest.approx(0.1)
    assert prob_up(0.01, 0.02, 0.03) > 0.9


async def test_history_shows_past_predictions_with_realised_outcomes(
    api: httpx.AsyncClient,
) -> None:
    served = await api.get(
        "/api/v1/predictions/PG", params={"as_of": "2022-03-01", "model": "lstm", "horizon": 5}
    )
    assert served.status_code == 200
    body = (
        await api.get("/api/v1/predictions/PG/history", params={"model": "lstm", "horizon": 5})
    ).json()
    assert body["ticker"] == "PG"
    past = next(p for p in body["predictions"] if p["as_of"] == "2022-03-01")
    assert past["model"]["family"] == "lstm"
    assert past["log_return_quantiles"]["q50"] == pytest.approx(
        served.json()["log_return_quantiles"]["q50"]
    )
    outcome = past["outcome"]  # 5 trading days later is in the data, so it is scored
    assert outcome["date"] == "2022-03-08"
    assert outcome["inside_80"] == (
        past["log_return_quantiles"]["q10"]
        <= outcome["realised_log_return"]
        <= past["log_return_quantiles"]["q90"]
    )
    bad = await api.get("/api/v1/predictions/PG/history", params={"horizon": 7})
    assert bad.status_code == 422


async def test_models_lists_versions_aliases_weights_and_history(
    api: httpx.AsyncClient, pool: asyncpg.Pool, admin_headers: dict[str, str]
) -> None:
    await AliasEventRepository(pool).record(
        AliasEvent("stockcopilot-hybrid", "challenger", None, "2", "tester", "second opinion")
    )
    response = await api.get("/api/v1/models")
    assert response.status_code == 200
    families = {f["family"]: f for f in response.json()}
    assert set(families) == set(FAMILIES)
    hybrid = families["hybrid"]
    assert (hybrid["champion"], hybrid["challenger"]) == ("1", "2")
    assert hybrid["challenger_weight"] == 0.5
    assert {v["version"] for v in hybrid["versions"]} >= {"1", "2"}
    moves = [m for m in hybrid["alias_history"] if m["to_version"] == "2"]
    assert moves and all(m["actor"] is None for m in moves)  # an operator's login is not public
    assert families["lstm"]["challenger"] is None
    for_admin = await api.get("/api/v1/models", headers=admin_headers)
    hybrid = {f["family"]: f for f in for_admin.json()}["hybrid"]
    assert any(m["actor"] == "tester" and m["to_version"] == "2" for m in hybrid["alias_history"])


async def test_served_forecasts_and_cache_hits_are_counted(
    api: httpx.AsyncClient, metrics_auth: dict[str, str]
) -> None:
    from tests.api.test_observability import sample

    def counts(text: str) -> tuple[float, float]:
        served = sample(
            text, "stockcopilot_predictions_total", family="lstm", version="1", variant="champion"
        )
        return served or 0.0, sample(text, "stockcopilot_prediction_cache_total", result="hit") or 0

    before = counts((await api.get("/metrics", headers=metrics_auth)).text)
    for _ in range(2):  # the second answer comes from the cache
        response = await api.get(
            "/api/v1/predictions/PG", params={"model": "lstm", "as_of": "2021-07-01"}
        )
        assert response.status_code == 200, response.text
    after = counts((await api.get("/metrics", headers=metrics_auth)).text)
    assert after[0] - before[0] == 2 and after[1] - before[1] == 1


async def test_a_replay_bounds_forecasts_and_each_one_says_whether_it_is_stale(
    api: httpx.AsyncClient,
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    serving_registry: MlflowClient,
) -> None:
    """Routes, the parsed path (sockets, alerts, chat) and the chat tool: forecasts made from
    the replay day, fresh then; the cached document never holds `stale`."""
    day = await replay_day(pool)
    service = PredictionService(
        pool,
        LocalPredictor(serving_registry),
        JsonCache(redis, "pred:v1", settings.prediction_cache_ttl_s),
        PredictionLog(pool),  # not started: these forecasts are not logged
        ChallengerWeights(pool),
    )
    tools = ChatTools(
        pool,
        Principal(uuid.uuid4(), "user", None),
        MarketDataService(pool),
        MarketService.cached_in(pool, redis),
        service,
    )
    params = {"model": "garch", "horizon": 5}
    async with replaying(pool, api, day):
        single = await api.get("/api/v1/predictions/PG", params=params)
        assert single.status_code == 200, single.text
        batch = await api.post(
            "/api/v1/predictions/batch", json={"tickers": ["PG", "KO"], **params}
        )
        assert batch.status_code == 200, batch.text
        parsed = await service.predict_many(["PG"], 5, "garch", "user:replay")
        tool = await tools.run("prediction", {"ticker": "PG", "model": "garch"})
        assert tool.data["available"] is True, tool.data
        answers = [single.json(), *batch.json()["predictions"], *parsed]
        for answer in answers:
            assert_bounded(answer, day, answer["ticker"])
        history = await api.get("/api/v1/predictions/PG/history", params={"model": "garch"})
        assert history.status_code == 200, history.text
        assert_bounded(history.json(), day, "history")  # this run's forecasts, none resolved
        assert {p["as_of"] for p in history.json()["predictions"]} == {str(day)}
        assert (tool.data["as_of"], tool.data["stale"]) == (str(day), False)
        clock = await MarketClockRepository(pool).read()
        assert clock is not None
    version = single.json()["model"]["version"]
    cached = await redis.get(f"pred:v1:PG:5:garch:{version}:{day}:{clock.run}")
    assert cached is not None and "stale" not in json.loads(cached)
    newest = await pool.fetchval("SELECT max(date) FROM bars WHERE ticker = 'PG'")
    after = (await api.get("/api/v1/predictions/PG", params=params)).json()
    assert (after["as_of"], after["stale"]) == (str(newest), True)

    async def stale_now() -> bool:  # once the service's clock reading (kept 0.5 s) is renewed
        (again,) = await service.predict_many(["PG"], 5, "garch", "user:replay", as_of=day)
        return (again["as_of"], again["stale"]) == (str(day), True)

    assert await eventually(stale_now), "a look back at the replay day is stale on the real clock"


async def test_every_pass_of_a_replay_forecasts_a_day_afresh_and_logs_it_for_that_pass(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """A looping replay meets the same day again: the earlier pass's cached forecast must not
    answer it, or the new pass would log nothing for that day and its A/B test would stay empty."""
    day = await replay_day(pool)
    params = {"model": "garch", "horizon": 1}
    runs = []
    for _ in range(2):
        async with replaying(pool, api, day):
            response = await api.get("/api/v1/predictions/KO", params=params)
            assert response.status_code == 200, response.text
            clock = await MarketClockRepository(pool).read()
            assert clock is not None
            runs.append(clock.run)

            async def logged_in_this_pass(run: int = clock.run) -> bool:
                return bool(
                    await pool.fetchval(
                        """SELECT count(*) FROM prediction_log WHERE ticker = 'KO'
                           AND as_of = $1 AND family = 'garch' AND clock_run = $2""",
                        day,
                        run,
                    )
                )

            assert await eventually(logged_in_this_pass), f"pass {clock.run} logged nothing"
    assert runs[1] > runs[0]
