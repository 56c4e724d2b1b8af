"""Embedded services keep their data across restarts and honour external URLs."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
import redis

from api.settings import Settings
from pipelines.embedded import resolved_settings, service_urls


async def test_data_survives_a_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=None, redis_url=None)
    with resolved_settings(settings) as ready:
        conn = await asyncpg.connect(ready.database_url)
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        await conn.close()
        client = redis.Redis.from_url(ready.redis_url or "")
        client.set("kept", "yes")
        client.close()
    with resolved_settings(settings) as again:
        conn = await asyncpg.connect(again.database_url)
        assert await conn.fetchval("SELECT v FROM kept") == 42
        await conn.close()
        client = redis.Redis.from_url(again.redis_url or "")
        assert client.get("kept") == b"yes"
        client.close()
    assert (tmp_path / "pgdata").is_dir() and (tmp_path / "redis").is_dir()


def test_external_urls_are_used_as_given(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url="postgresql://db.example/x", redis_url="redis://cache:6379"
    )
    with service_urls(settings) as urls:
        assert urls.database_url == "postgresql://db.example/x"
        assert urls.redis_url == "redis://cache:6379"
    assert not (tmp_path / "pgdata").exists()  # nothing embedded was started


def test_a_crashed_process_does_not_keep_postgres_running(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=None, redis_url=None)
    with resolved_settings(settings, need_redis=False):
        pass
    # a process that was SIGKILLed while holding the server stays in pgserver's handle list
    (tmp_path / "pgdata" / ".handle_pids.json").write_text("[99999999]")
    with resolved_settings(settings, need_redis=False) as ready:
        assert ready.database_url
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()  # stopped on exit


def test_a_relative_registry_path_is_fixed_where_settings_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray workers and trials run in other directories: the registry they open must be this one."""
    monkeypatch.chdir(tmp_path)
    relative = Settings(mlflow_tracking_uri="sqlite:///mlruns/mlflow.db")
    assert relative.mlflow_tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    for kept in ("sqlite:////srv/mlflow.db", "http://mlflow:5000"):
        assert Settings(mlflow_tracking_uri=kept).mlflow_tracking_uri == kept
