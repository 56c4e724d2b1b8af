"""The `stockcopilot` CLI against the session's embedded Postgres."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from api.db.migrate import discover
from tests.utils import invoke


async def test_db_upgrade_reports_the_schema_version(cli_env: None, pool: asyncpg.Pool) -> None:
    result = await invoke("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"schema at version {len(discover())}; applied now: none" in result.output


async def test_import_bars_reports_lines_and_writes_nothing_on_error(
    cli_env: None, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("date,close\n2024-01-02,5\n2024-01-03,-1\nnot-a-date,3\n")
    result = await invoke("import-bars", str(bad), "--ticker", "CLIBAD")
    assert result.exit_code == 1
    assert "line 3 (close)" in result.output and "line 4 (date)" in result.output
    assert await pool.fetchval("SELECT count(*) FROM bars WHERE ticker = 'CLIBAD'") == 0


async def test_import_bars_stores_a_valid_file(
    cli_env: None, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    good = tmp_path / "good.csv"
    good.write_text("date,close\n2024-01-02,5\n2024-01-03,5.5\n")
    result = await invoke("import-bars", str(good), "--ticker", "cligood")
    assert result.exit_code == 0, result.output
    assert "imported 2 bars for CLIGOOD: 2 new, 0 replaced" in result.output
    assert await pool.fetchval("SELECT count(*) FROM bars WHERE ticker = 'CLIGOOD'") == 2


async def test_baselines_walks_the_classical_yardstick_forward(cli_env: None) -> None:
    result = await invoke("baselines", "--profile", "quick")
    assert result.exit_code == 0, result.output
    assert "strongest on validation:" in result.output
    for name in ("historical_drift", "ewma", "garch", "gjr", "har"):
        assert f"| {name} | all |" in result.output and f"| {name} | fold0 |" in result.output
