"""Plot data of the evaluate stage: skill per fold, reliability, fan chart, and their DVC plots."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from contracts import DEFAULT_FAMILY, model_name
from pipelines.plots import EXPERIMENT, fan_ticker, log_evaluation, write_plots
from pipelines.report import row_name
from tests.utils import TINY, invoke
from training import walkforward as wf
from training.card import ModelCard

ROOT = Path(__file__).resolve().parents[2]
DAYS = pd.bdate_range("2021-01-04", periods=60)
TICKERS = ("AAPL", "KO", "SPX")
HORIZONS = (1, 5)
FOLDS = [
    {
        "index": str(k),
        "fit_end": "2020-12-01",
        "val_start": "2020-12-02",
        "val_end": "2020-12-31",
        "test_start": str(days[0].date()),
        "test_end": str(days[-1].date()),
    }
    for k, days in enumerate((DAYS[:30], DAYS[30:]))
]


def _truth(seed: int = 7) -> pd.DataFrame:
    rows = pd.MultiIndex.from_product(
        [DAYS, TICKERS, HORIZONS], names=["date", "ticker", "horizon"]
    ).to_frame(index=False)
    rng = np.random.default_rng(seed)
    rows["y"] = rng.normal(0.0, 0.01, len(rows)) * np.sqrt(rows["horizon"])
    rows["fold"] = (rows["date"] >= DAYS[30]).astype(int)
    return rows


def _quantiles(truth: pd.DataFrame, center: np.ndarray, spread: np.ndarray) -> pd.DataFrame:
    return truth.assign(q10=center - spread, q50=center, q90=center + spread)


def _member(root: Path, family: str, test: pd.DataFrame, rw: pd.DataFrame) -> None:
    """A member folder as training leaves it: predictions, baselines and a real model card."""
    out = root / family
    out.mkdir(parents=True)
    # validation rows whose q10 sits above every y: they must not reach the test-row plots
    val = test.assign(q10=test["y"] + 1.0, split="val")
    pd.concat([test.assign(split="test"), val], ignore_index=True).to_parquet(
        out / "predictions.parquet", index=False
    )
    rw.to_parquet(out / "baseline_random_walk.parquet", index=False)
    metrics = {family: wf.score(test, rw, TINY), "random_walk": wf.score(rw, rw, TINY)}
    ModelCard(family, "test", TINY.to_dict(), FOLDS, metrics).write(out)


def _ensemble(root: Path, test: pd.DataFrame, rw: pd.DataFrame, member: pd.DataFrame) -> None:
    """The ensemble folder: test rows only (no split column) and a card that re-scores a
    member; the member's own card must win, as in the walk-forward table."""
    out = root / "ensemble"
    out.mkdir(parents=True)
    test.to_parquet(out / "predictions.parquet", index=False)
    metrics = {
        "ensemble": wf.score(test, rw, TINY),
        "lstm": wf.score(member, rw, TINY),
        "random_walk": wf.score(rw, rw, TINY),
    }
    ModelCard("ensemble", "test", TINY.to_dict(), FOLDS, metrics).write(out)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lstm: q10/q90 2 % either side of the realised return (an oracle median); ensemble: the
    random walk's quantiles nudged, so its skill is near zero."""
    root = tmp_path_factory.mktemp("evaluate") / "models"
    truth = _truth()
    sigma = 0.01 * np.sqrt(truth["horizon"].to_numpy())
    rw = _quantiles(truth, np.zeros(len(truth)), 1.2816 * sigma)
    noise = np.random.default_rng(3).normal(0, 0.002, len(truth))
    lstm = _quantiles(truth, truth["y"].to_numpy(), np.full(len(truth), 0.02))
    _member(root, "lstm", lstm, rw)
    _ensemble(root, _quantiles(truth, noise, 1.2816 * sigma), rw, rw.assign(q50=0.01))
    return root


def test_skill_rows_are_the_cards_per_fold_numbers(models_dir: Path, tmp_path: Path) -> None:
    files = write_plots(models_dir, tmp_path / "plots")
    skill = pd.read_csv(files.skill)
    assert set(skill["model"]) == {"lstm", "ensemble", "random_walk"}
    assert len(skill) == 3 * len(FOLDS) * len(HORIZONS)
    assert not skill.duplicated(["model", "fold", "horizon"]).any()
    families = ("lstm", "ensemble")
    cards = {f: json.loads((models_dir / f / "card.json").read_text()) for f in families}
    for model, fold in itertools.product(families, (0, 1)):
        rows = skill[(skill["model"] == model) & (skill["fold"] == fold)]
        expected = cards[model]["metrics"][model][f"fold{fold}"]  # each family's own card
        assert rows["horizon"].tolist() == [m["horizon"] for m in expected]
        assert rows["skill_vs_rw"].tolist() == pytest.approx([m["skill_vs_rw"] for m in expected])
        assert set(rows["test_start"]) == {FOLDS[fold]["test_start"]}
    rescored = cards["ensemble"]["metrics"]["lstm"]["fold0"][0]["skill_vs_rw"]
    assert rescored != pytest.approx(cards["lstm"]["metrics"]["lstm"]["fold0"][0]["skill_vs_rw"])
    assert (skill.loc[skill["model"] == "lstm", "skill_vs_rw"] > 0.3).all()  # an oracle median
    assert skill.loc[skill["model"] == "random_walk", "skill_vs_rw"].abs().max() < 1e-12
    assert dict(zip(skill["model"], skill["kind"], strict=True)) == {
        "lstm": "network",
        "ensemble": "ensemble",
        "random_walk": "naive",
    }


def test_reliability_counts_test_rows_below_each_quantile(models_dir: Path, tmp_path: Path) -> None:
    table = pd.read_csv(write_plots(models_dir, tmp_path / "plots").reliability)
    table = table.set_index(["model", "horizon", "nominal"])
    per_horizon = len(DAYS) * len(TICKERS)  # the test rows only; validation rows left out
    assert (table["n"] == per_horizon).all()
    for h in HORIZONS:
        assert table.loc[("lstm", h, 0.1), "observed"] == 0.0  # q10 always below y
        assert table.loc[("lstm", h, 0.9), "observed"] == 1.0
        observed = [table.loc[("random_walk", h, q), "observed"] for q in (0.1, 0.5, 0.9)]
        assert observed == sorted(observed) and 0.0 < observed[0] < 0.25 < 0.75 < observed[2]
    assert set(table.index.get_level_values("model")) == {"lstm", "ensemble", "random_walk"}


def test_fan_chart_draws_the_best_model_on_spx_over_the_last_fold(
    models_dir: Path, tmp_path: Path
) -> None:
    files = write_plots(models_dir, tmp_path / "plots")
    assert (files.model, files.ticker) == ("lstm", "SPX")  # no classical family trained here
    fan = pd.read_csv(files.fan_chart)
    assert set(fan["model"]) == {"lstm"} and set(fan["ticker"]) == {"SPX"}
    assert set(fan["fold"]) == {1} and sorted(set(fan["horizon"])) == list(HORIZONS)
    assert len(fan) == 30 * len(HORIZONS)
    assert fan["date"].iloc[0] == str(DAYS[30].date())
    truth = _truth().set_index(["date", "ticker", "horizon"])["y"]
    keys = zip(pd.to_datetime(fan["date"]), fan["ticker"], fan["horizon"], strict=True)
    np.testing.assert_allclose(fan["y"], [truth[k] for k in keys])
    assert (fan["q10"] < fan["q50"]).all() and (fan["q50"] < fan["q90"]).all()


def test_fan_chart_prefers_the_served_family_when_it_was_evaluated(
    models_dir: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(models_dir, tmp_path / "models")
    rw = pd.read_parquet(copy / "lstm" / "baseline_random_walk.parquet")
    # a baseline of the family's name is not the family: the family's own predictions are
    rw.to_parquet(copy / "lstm" / f"baseline_{DEFAULT_FAMILY}.parquet", index=False)
    assert write_plots(copy, tmp_path / "before", ticker="KO").model == "lstm"
    (copy / DEFAULT_FAMILY).mkdir()
    rw.assign(split="test").to_parquet(copy / DEFAULT_FAMILY / "predictions.parquet", index=False)
    files = write_plots(copy, tmp_path / "plots", ticker="KO")
    served = row_name(DEFAULT_FAMILY)
    assert (files.model, files.ticker) == (served, "KO")
    assert set(pd.read_csv(files.fan_chart)["model"]) == {served}


def test_fan_ticker_is_spx_else_the_first_equity() -> None:
    assert fan_ticker(["KO", "SPX", "AAPL"]) == "SPX"
    assert fan_ticker(["MTUM", "KO", "AAPL"]) == "AAPL"
    assert fan_ticker(["AAA", "KO"]) == "KO"  # AAA is no equity of the universe
    assert fan_ticker(["VLUE", "MTUM"]) == "MTUM"


def test_dvc_plots_read_what_the_evaluate_stage_writes(models_dir: Path, tmp_path: Path) -> None:
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    evaluate = pipeline["stages"]["evaluate"]
    out = Path(evaluate["cmd"].split("--out", 1)[1].split()[0])
    assert any(str(out / "plots") in entry for entry in evaluate["outs"])
    files = write_plots(models_dir, tmp_path / out / "plots")
    written = {path.relative_to(tmp_path).as_posix(): path for path in files.paths}
    referenced = set()
    for entry in pipeline["plots"]:
        ((_, plot),) = entry.items()
        assert (ROOT / ".dvc" / "plots" / f"{plot['template']}.json").exists()
        for source, field in plot["y"].items():
            referenced.add(source)
            columns = pd.read_csv(written[source]).columns
            assert field in columns and plot["x"] in columns
    assert referenced == set(written)


@pytest.mark.timeout(120)
def test_dvc_renders_the_plots_with_their_templates(models_dir: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, project / name)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=project, check=True)
    shutil.copytree(ROOT / ".dvc" / "plots", project / ".dvc" / "plots")
    write_plots(models_dir, project / "reports" / "plots")
    done = subprocess.run(
        [*dvc, "plots", "show", "--json"], cwd=project, capture_output=True, text=True, check=True
    )
    shown = json.loads(done.stdout)
    assert not shown.get("errors"), shown.get("errors")
    for plot_id in ("skill_per_fold", "reliability", "fan_chart"):
        (spec,) = [p["content"] for p in shown["data"][plot_id]]
        assert spec["data"]["values"] and "<DVC_METRIC" not in json.dumps(spec)


def test_evaluation_is_logged_to_its_mlflow_experiment(
    models_dir: Path, tmp_path: Path, registry_uri: str, registry_root: Path
) -> None:
    files = write_plots(models_dir, tmp_path / "reports" / "plots")
    report = tmp_path / "reports" / "walkforward.md"
    report.write_text("# table\n")
    run_id = log_evaluation([report], files, registry_uri, registry_root / "artifacts")
    client = MlflowClient(registry_uri)
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == model_name(EXPERIMENT) == "stockcopilot-evaluate"
    assert run.data.tags["fan_chart.model"] == "lstm" and run.data.tags["profile"] == "test"
    logged = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert logged == {f"plots/{p.name}" for p in files.paths}
    assert "walkforward.md" in {a.path for a in client.list_artifacts(run_id)}
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="plots"))
    assert (local / files.skill.name).read_text() == files.skill.read_text()


async def test_evaluate_command_writes_the_table_and_plots_and_logs_them(
    models_dir: Path,
    tmp_path: Path,
    registry_uri: str,
    registry_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shutil.copytree(models_dir, tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_uri)
    monkeypatch.setenv("STOCKCOPILOT_DATA_DIR", str(tmp_path / ".stockcopilot"))
    # the command's registry.configure() points the artefact root at ./mlruns/artifacts (an env
    # variable); monkeypatch puts the session's value back afterwards
    monkeypatch.setenv("STOCKCOPILOT_ARTIFACT_ROOT", str(registry_root / "artifacts"))
    result = await invoke("evaluate", "--out", "reports")
    assert result.exit_code == 0, result.output
    written = {p.name for p in (tmp_path / "reports" / "plots").iterdir()}
    assert written == {"skill_per_fold.csv", "reliability.csv", "fan_chart.csv"}
    assert "| lstm |" in (tmp_path / "reports" / "walkforward.md").read_text()
    run_id = result.output.split("MLflow run")[1].split()[0]
    client = MlflowClient(registry_uri)
    assert {a.path for a in client.list_artifacts(run_id)} >= {"plots", "walkforward.md"}
