"""`dvc repro` of the quick profile, end to end, offline, in a fresh copy of the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from contracts import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
COPY = (
    "contracts",
    "features",
    "training",
    "pipelines",
    "api",
    "serving",
    "dvc.yaml",
    "params.yaml",
)


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_profile_dvc_repro_trains_evaluates_and_registers(tmp_path: Path) -> None:
    for name in COPY:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["profile"] = "quick"
    # the quick profile, smaller still: this checks the pipeline's wiring, not the models
    quick = params["profiles"]["quick"]
    quick["common"].update(
        tickers=["AAPL", "KO", "SPX"], n_folds=2, max_epochs=1, start="2016-01-01"
    )
    quick["garch"]["tickers"] = ["AAPL", "KO", "JPM"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "STOCKCOPILOT_DATA_DIR": str(tmp_path / ".stockcopilot"),
        "LOG_JSON": "true",
    }
    env.pop("DATABASE_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    _run(["dvc", "init", "--no-scm", "--quiet"], tmp_path, env)
    _run(["dvc", "config", "core.analytics", "false"], tmp_path, env)
    _run(["dvc", "repro"], tmp_path, env)

    report = (tmp_path / "reports" / "walkforward.md").read_text()
    models = ("garch (family)", "lstm", "transformer", "hybrid", "ensemble")
    for model in (*models, "random_walk", "historical_drift"):
        assert f"| {model} |" in report
    for model in ("ewma", "garch", "gjr", "har"):  # the classical baselines, fitted per fold
        assert f"| {model} |" in report
    assert "Strongest classical baseline (picked on validation blocks): **" in report
    versions = json.loads((tmp_path / "models" / "registry.json").read_text())
    assert set(versions) == set(FAMILIES)
    garch = json.loads((tmp_path / "models" / "garch" / "card.json").read_text())
    assert garch["notes"][1].startswith(("serves garch", "serves gjr"))
    card = json.loads((tmp_path / "models" / "ensemble" / "card.json").read_text())
    assert card["profile"] == "quick" and set(card["skill"]) == {"1", "5", "20"}
    assert card["skill"]["1"]["reference"] in ("ewma", "garch", "gjr", "har")
    assert "; " in card["skill"]["1"]["verdict"]  # its verdict against the classical baseline too
    # nothing changed, so a second repro has nothing to do
    again = _run(["dvc", "repro"], tmp_path, env)
    assert "didn't change, skipping" in again and "Running stage" not in again
    assert "up to date" in _run(["dvc", "status"], tmp_path, env)
