"""MLflow registry round trip and audited alias moves, against a real sqlite-backed registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from api.db.models import AliasEventRepository
from pipelines.models import RegistryError, move_alias, rollback
from training import registry
from training.bundle import ForecastBundle
from training.data import Panel, Vocab
from training.models import QuantileForecaster


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowClient]:
    root = tmp_path_factory.mktemp("mlruns")
    yield registry.configure(f"sqlite:///{root}/mlflow.db", root / "artifacts")


def _log_version(bundle: ForecastBundle, tmp: Path) -> str:
    registry.experiment(bundle.family)
    with mlflow.start_run():
        uri = registry.log_bundle(bundle, tmp)
    return registry.register(uri, bundle.family, {"profile": "test"})


async def test_log_register_alias_load_gives_the_same_predictions(
    client: MlflowClient,
    tiny_model: tuple[QuantileForecaster, object],
    tiny_panel: Panel,
    tiny_vocab: Vocab,
    tiny_bars: pd.DataFrame,
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    module, scaler = tiny_model
    bundle = ForecastBundle.from_module(module, tiny_panel.config, scaler, tiny_vocab)
    version = _log_version(bundle, tmp_path / "v")
    async with pool.acquire() as conn:
        move = await move_alias(client, conn, "hybrid", "champion", version, "tester", "first")
    assert move.from_version is None and move.to_version == version
    loaded = mlflow.pyfunc.load_model("models:/stockcopilot-hybrid@champion")
    via_pyfunc = loaded.predict(tiny_bars)
    pd.testing.assert_frame_equal(via_pyfunc, bundle.predict_bars(tiny_bars))
    reloaded = registry.load_bundle("models:/stockcopilot-hybrid@champion")
    assert isinstance(reloaded, ForecastBundle) and reloaded.scaler == scaler
    assert reloaded.feature_config == tiny_panel.config


async def test_rollback_restores_the_previous_champion_and_is_audited(
    client: MlflowClient,
    tiny_model: tuple[QuantileForecaster, object],
    tiny_panel: Panel,
    tiny_vocab: Vocab,
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    module, scaler = tiny_model
    bundle = ForecastBundle.from_module(module, tiny_panel.config, scaler, tiny_vocab)
    first, second = _log_version(bundle, tmp_path / "a"), _log_version(bundle, tmp_path / "b")
    async with pool.acquire() as conn:
        await move_alias(client, conn, "hybrid", "champion", first, "alice", "baseline")
        await move_alias(client, conn, "hybrid", "champion", second, "bob", "better h5")
        assert registry.alias_version(client, "hybrid", "champion") == second
        back = await rollback(client, conn, "hybrid", "carol", "h5 regressed live")
        assert (back.from_version, back.to_version) == (second, first)
        assert registry.alias_version(client, "hybrid", "champion") == first
        history = await AliasEventRepository(conn).history("stockcopilot-hybrid", "champion")
        latest = history[0]
        assert (latest.actor, latest.from_version, latest.to_version) == ("carol", second, first)
        assert "rollback" in latest.reason and latest.at is not None
        with pytest.raises(RegistryError, match="no version 999"):
            await move_alias(client, conn, "hybrid", "champion", "999", "eve", "typo")
        assert registry.alias_version(client, "hybrid", "champion") == first


async def test_rollback_without_history_says_what_to_do(
    client: MlflowClient,
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RegistryError, match=r"no .*champion"):
            await rollback(client, conn, "transformer", "dave", "nothing to roll back")
