"""A real MLflow registry holding tiny trained models of every family, and an API serving them."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from api.app import create_app
from api.db.users import UserRepository
from api.security.crypto import Keyring
from api.services.ab import bucket
from api.services.auth import AuthService, create_account
from api.settings import Settings
from features.windows import FeatureConfig
from serving.local import LocalPredictor
from tests.utils import TINY
from training import registry
from training.bundle import EnsembleBundle, ForecastBundle
from training.data import MEMBERS, Vocab, build_panel
from training.walkforward import fit_on_fold, folds_for

CFG = TINY
TICKERS = ("AAPL", "KO", "XOM", "JPM", "MSFT")
CHALLENGER_WEIGHTS = {"hybrid": 0.5}


def log_and_register(
    bundle: ForecastBundle | EnsembleBundle, family: str, directory: Path
) -> tuple[str, str]:
    registry.experiment(family)
    with mlflow.start_run():
        uri = registry.log_bundle(bundle, directory)
    return registry.register(uri, family), uri


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving-mlruns")


@pytest.fixture(scope="session")
def registry_uri(registry_root: Path) -> str:
    return f"sqlite:///{registry_root}/mlflow.db"


@pytest.fixture(scope="session")
def serving_registry(
    registry_root: Path,
    registry_uri: str,
    bundled_bars: pd.DataFrame,
) -> MlflowClient:
    """lstm/transformer/hybrid champions (hybrid also has a challenger) and an ensemble."""
    root = registry_root
    client = registry.configure(registry_uri, root / "artifacts")
    bars = bundled_bars[bundled_bars["ticker"].isin(TICKERS) & (bundled_bars["date"] >= "2019")]
    panel = build_panel(bars, FeatureConfig(window=CFG.window), CFG.horizons)
    vocab = Vocab.build(
        {
            "AAPL": "Information Technology",
            "KO": "Consumer Staples",
            "XOM": "Energy",
            "JPM": "Financials",
            "MSFT": "Information Technology",
        }
    )
    fold = folds_for(panel, CFG)[-1]
    members = {}
    for family in MEMBERS:
        module, scaler = fit_on_fold(family, CFG, panel, vocab, fold)
        card = {
            "skill": {
                h: {
                    "skill_vs_rw": 0.0,
                    "dm_pvalue": 0.9,
                    "coverage_80": 0.8,
                    "verdict": f"no better than a random walk at {h} day(s)",
                }
                for h in CFG.horizons
            }
        }
        bundle = ForecastBundle.from_module(module, panel.config, scaler, vocab, card)
        version, uri = log_and_register(bundle, family, root / family)
        registry.set_alias(client, family, "champion", version)
        members[family] = {"run_id": "", "model_uri": uri}
    challenger, _ = log_and_register(bundle, "hybrid", root / "hybrid-2")
    registry.set_alias(client, "hybrid", "challenger", challenger)
    weights = {h: dict.fromkeys(MEMBERS, 1 / 3) for h in CFG.horizons}
    version, _ = log_and_register(EnsembleBundle(weights, members), "ensemble", root / "ensemble")
    registry.set_alias(client, "ensemble", "champion", version)
    return client


@pytest.fixture(scope="session")
async def api(
    settings: Settings,
    first_ingest: object,
    serving_registry: MlflowClient,
    user_headers: dict[str, str],
) -> AsyncIterator[httpx.AsyncClient]:
    """The API over the in-process predictor of this registry, signed in as the default user."""

    async def weight(family: str) -> float:
        return CHALLENGER_WEIGHTS.get(family, 0.0)

    predictor = LocalPredictor(serving_registry, weight)
    app = create_app(settings, predictor)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=user_headers
        ) as client:
            yield client


Caller = tuple[uuid.UUID, dict[str, str]]


@pytest.fixture(scope="session")
async def mint_user(
    settings: Settings, pool: asyncpg.Pool
) -> AsyncIterator[Callable[[], Awaitable[Caller]]]:
    """Signed-in users made in bulk for A/B tests: a real account and session each, created
    through the repositories and AuthService (no password, so no argon2 cost per user)."""
    keyring = Keyring.from_settings(settings)
    redis = Redis.from_url(settings.redis_url or "", decode_responses=True)
    auth = AuthService(pool, redis, settings, keyring)

    async def mint() -> Caller:
        email = f"caller-{uuid.uuid4().hex}@example.com"
        user = await create_account(UserRepository(pool), keyring, email, "A/B caller", None)
        pair = await auth.start_session(user, "tests", None)
        return user.id, {"Authorization": f"Bearer {pair.access_token}"}

    yield mint
    await redis.aclose()


async def caller_on(
    mint: Callable[[], Awaitable[Caller]], family: str, challenger: bool, weight: float = 0.5
) -> dict[str, str]:
    """Headers of a user the sticky router sends to the wanted variant at `weight`."""
    for _ in range(200):
        user_id, headers = await mint()
        if (bucket(f"user:{user_id}", family) < weight) == challenger:
            return headers
    raise AssertionError("no caller found")


async def last_rollback(pool: asyncpg.Pool, family: str, broken: str) -> asyncpg.Record:
    """The automatic rollback of `broken` in the alias history, waited for (the alias moves
    back first, the audit row follows)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        event = await pool.fetchrow(
            """SELECT from_version, to_version, reason FROM model_alias_events
               WHERE actor = 'auto-rollback' AND model = $1 AND from_version = $2
               ORDER BY id DESC LIMIT 1""",
            f"stockcopilot-{family}",
            broken,
        )
        if event is not None:
            return event
        await asyncio.sleep(0.2)
    raise AssertionError(f"no rollback of {family} version {broken} recorded")


async def next_notification(pubsub: PubSub, redis: Redis, seconds: int = 20) -> dict | None:
    """The next message published on a subscribed channel (None after `seconds`); closes both."""
    message = None
    for _ in range(seconds):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message:
            break
    await pubsub.aclose()
    await redis.aclose()
    return json.loads(message["data"]) if message else None
