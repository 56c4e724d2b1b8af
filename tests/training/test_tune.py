"""Ray Tune search end to end (real Ray, real MLflow on sqlite) and the params.yaml write-back."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from training.config import load_config
from training.tune import SEARCHED, tune_family, write_tuned

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of params.yaml in a fresh working directory; MLflow's globals restored after."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "STOCKCOPILOT_ARTIFACT_ROOT"):
        monkeypatch.delenv(var, raising=False)
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield tmp_path
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def test_write_tuned_changes_only_its_key_and_keeps_comments(workdir: Path) -> None:
    path = workdir / "params.yaml"
    before = yaml.safe_load(path.read_text())
    comments = [line for line in path.read_text().splitlines() if line.startswith("#")]
    write_tuned("quick", "lstm", {"hidden": 8, "lr": 0.001})
    write_tuned("quick", "hybrid", {"hidden": 16})
    write_tuned("full", "lstm", {"window": 60})
    write_tuned("quick", "lstm", {"hidden": 16, "lr": 0.002})  # replaces the first
    after = yaml.safe_load(path.read_text())
    assert after.pop("tuned") == {
        "quick": {"lstm": {"hidden": 16, "lr": 0.002}, "hybrid": {"hidden": 16}},
        "full": {"lstm": {"window": 60}},
    }
    before.pop("tuned", None)
    assert after == before
    assert [line for line in path.read_text().splitlines() if line.startswith("#")] == comments


def test_write_tuned_adds_the_section_when_missing(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("# header\nprofiles:\n  quick:\n    common: {window: 20}\n")
    write_tuned("quick", "lstm", {"hidden": 8}, path)
    text = path.read_text()
    assert text.startswith("# header\nprofiles:\n")
    assert yaml.safe_load(text) == {
        "profiles": {"quick": {"common": {"window": 20}}},
        "tuned": {"quick": {"lstm": {"hidden": 8}}},
    }


def test_tune_family_searches_logs_children_and_writes_the_best(workdir: Path) -> None:
    uri = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
    lines: list[str] = []
    result = tune_family("lstm", "quick", trials=2, report=lines.append, tracking_uri=uri)

    assert set(result.best_config) == set(SEARCHED)
    tuned = yaml.safe_load((workdir / "params.yaml").read_text())["tuned"]["quick"]["lstm"]
    assert tuned == result.best_config
    cfg = load_config("lstm", "quick")
    assert {k: getattr(cfg, k) for k in SEARCHED} == result.best_config
    assert result.trials == 2 and result.seconds > 0
    assert any("best val_loss" in line for line in lines)

    client = MlflowClient(uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.run_name == "tune-lstm-quick"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_loss"] == pytest.approx(result.best_val_loss)
    assert parent.data.params["best.window"] == str(result.best_config["window"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'",
    )
    assert len(children) == 2
    losses = []
    for child in children:
        assert child.info.status in ("FINISHED", "KILLED")
        assert set(SEARCHED) <= set(child.data.params)
        history = client.get_metric_history(child.info.run_id, "val_loss")
        assert history and [m.step for m in history] == list(range(1, len(history) + 1))
        losses += [m.value for m in history]
        assert result.best_val_loss <= child.data.metrics["val_loss"]  # the final epoch's
    assert result.best_val_loss == pytest.approx(min(losses))
