"""Plot data for the DVC `evaluate` stage: skill per fold, quantile reliability, a fan chart.

Three small CSVs under `reports/plots/`, rendered by the top-level `plots:` of dvc.yaml (custom
Vega-Lite templates in `.dvc/plots/`) and logged to MLflow beside the walk-forward report.
Per-fold skill is read from the model cards, which scored it on each fold's test rows against
the random walk, so the plot and the table can never disagree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from contracts import DEFAULT_FAMILY, FAMILY_KINDS
from features.datasets import load_universe
from pipelines.report import ORDER, row_name
from training import registry
from training.classical import CLASSICAL
from training.metrics import QUANTILE_COLUMNS

SKILL_FILE = "skill_per_fold.csv"
RELIABILITY_FILE = "reliability.csv"
FAN_FILE = "fan_chart.csv"
LEVELS = dict(zip(QUANTILE_COLUMNS, (0.1, 0.5, 0.9), strict=True))
FAN_TICKER = "SPX"
FAN_HORIZONS = (1, 5)
EXPERIMENT = "evaluate"  # registry.experiment names it stockcopilot-evaluate

SKILL_COLUMNS = [
    "model",
    "kind",
    "fold",
    "test_start",
    "test_end",
    "horizon",
    "skill_vs_rw",
    "skill_vs_reference",
    "pinball",
    "n",
]
RELIABILITY_COLUMNS = ["model", "kind", "horizon", "nominal", "observed", "n"]
FAN_COLUMNS = ["model", "ticker", "fold", "horizon", "date", "y", "q10", "q50", "q90"]

Metrics = dict[str, dict[str, list[dict]]]  # model -> "all" / "fold<k>" / "ex2020" -> rows


@dataclass(frozen=True)
class Cards:
    """Every model's metrics as the walk-forward table reads them, and the folds' dates."""

    profile: str
    metrics: Metrics
    folds: dict[int, dict[str, str]]


@dataclass(frozen=True)
class PlotFiles:
    skill: Path
    reliability: Path
    fan_chart: Path
    model: str  # whose quantiles the fan chart draws
    ticker: str
    profile: str

    @property
    def paths(self) -> list[Path]:
        return [self.skill, self.reliability, self.fan_chart]


def kind(name: str) -> str:
    """network, ensemble, classical (the served family or a classical baseline) or naive."""
    family = name.removesuffix(" (family)")
    if family in FAMILY_KINDS and (family == name or family in CLASSICAL):
        return FAMILY_KINDS[family]
    return "classical" if name in CLASSICAL else "naive"


def _ordered(names: Iterable[str]) -> list[str]:
    present = set(names)
    return [n for n in ORDER if n in present] + sorted(present - set(ORDER))


def read_cards(models_dir: Path) -> Cards:
    """Metrics per model, each family's own card first (the rule of the walk-forward table:
    the ensemble card re-scores its members against the shared reference)."""
    metrics: Metrics = {}
    folds: dict[int, dict[str, str]] = {}
    profile = "?"
    for card_file in sorted(models_dir.glob("*/card.json")):
        card = json.loads(card_file.read_text())
        profile = card["profile"]
        folds |= {int(f["index"]): f for f in card["folds"]}
        for name, by_split in card["metrics"].items():
            if name == card["family"]:
                metrics[row_name(name)] = by_split
            else:
                metrics.setdefault(name, by_split)
    if not metrics:
        raise FileNotFoundError(f"no model cards under {models_dir}; train first")
    return Cards(profile, metrics, folds)


def skill_per_fold(cards: Cards) -> pd.DataFrame:
    """One row per (model, fold, horizon): pinball skill over the random walk on that fold."""
    rows = []
    for name in _ordered(cards.metrics):
        by_split = cards.metrics[name]
        fold_splits = sorted(
            (int(s.removeprefix("fold")), s) for s in by_split if s.startswith("fold")
        )
        for index, split in fold_splits:
            dates = cards.folds.get(index, {})
            for m in sorted(by_split[split], key=lambda m: m["horizon"]):
                rows.append(
                    {
                        "model": name,
                        "kind": kind(name),
                        "fold": index,
                        "test_start": dates.get("test_start"),
                        "test_end": dates.get("test_end"),
                        "horizon": int(m["horizon"]),
                        "skill_vs_rw": m["skill_vs_rw"],
                        "skill_vs_reference": m.get("skill_vs_reference", math.nan),
                        "pinball": m["pinball"],
                        "n": m["n"],
                    }
                )
    return pd.DataFrame(rows, columns=SKILL_COLUMNS)


def walkforward_predictions(models_dir: Path) -> dict[str, pd.DataFrame]:
    """Every model's walk-forward test rows: each family's from its predictions file (the
    ensemble saves test rows only, without a split column), each baseline's from the first
    family folder that saved it (every member saves the same rows)."""
    out: dict[str, pd.DataFrame] = {}
    for path in sorted(models_dir.glob("*/predictions.parquet")):
        frame = pd.read_parquet(path)
        if "split" in frame:
            frame = frame[frame["split"] == "test"].drop(columns="split")
        out[row_name(path.parent.name)] = frame
    for path in sorted(models_dir.glob("*/baseline_*.parquet")):
        out.setdefault(path.stem.removeprefix("baseline_"), pd.read_parquet(path))
    if not out:
        raise FileNotFoundError(f"no predictions under {models_dir}; train first")
    return out


def reliability(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per model, horizon and nominal level: the share of test rows with y below that quantile
    (a calibrated q10 is undershot 10 % of the time)."""
    parts = []
    for name in _ordered(predictions):
        frame = predictions[name]
        for column, level in LEVELS.items():
            rows = frame.dropna(subset=["y", column])
            hits = (rows["y"] < rows[column]).groupby(rows["horizon"]).agg(["mean", "size"])
            parts.append(
                hits.rename(columns={"mean": "observed", "size": "n"})
                .rename_axis("horizon")
                .reset_index()
                .assign(model=name, kind=kind(name), nominal=level)
            )
    table = pd.concat(parts, ignore_index=True)[RELIABILITY_COLUMNS]
    table["horizon"] = table["horizon"].astype(int)
    return table


def served_model(cards: Cards, available: Iterable[str]) -> str:
    """The family a request naming no model gets, when its predictions are on disk; else the
    model the walk-forward table ranks first (highest mean skill over the random walk across
    horizons); ties go to the table's order."""

    def mean_skill(name: str) -> float:
        values = [m["skill_vs_rw"] for m in cards.metrics[name].get("all", [])]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        return sum(finite) / len(finite) if finite else -math.inf

    names = _ordered(available)
    if row_name(DEFAULT_FAMILY) in names:
        return row_name(DEFAULT_FAMILY)
    scored = [n for n in names if n in cards.metrics]
    return max(scored, key=mean_skill) if scored else names[0]


def fan_ticker(tickers: Iterable[str]) -> str:
    """SPX when predicted, else the first equity alphabetically (else the first ticker)."""
    present = sorted(set(tickers))
    if FAN_TICKER in present:
        return FAN_TICKER
    equities = {i.ticker for i in load_universe().instruments if i.asset_type == "equity"}
    return next((t for t in present if t in equities), present[0])


def fan_chart(frame: pd.DataFrame, model: str, ticker: str) -> pd.DataFrame:
    """One ticker's quantiles and realised return over the last test fold, at h=1 and h=5."""
    rows = frame[(frame["ticker"] == ticker) & frame["horizon"].isin(FAN_HORIZONS)]
    rows = rows[rows["fold"] == rows["fold"].max()].assign(model=model)
    rows["date"] = pd.to_datetime(rows["date"]).dt.strftime("%Y-%m-%d")
    return rows.sort_values(["horizon", "date"])[FAN_COLUMNS].reset_index(drop=True)


def write_plots(
    models_dir: Path, out: Path, ticker: str | None = None, model: str | None = None
) -> PlotFiles:
    """Write the three plot CSVs into `out`; the fan chart draws `model` (default: the served
    one) for `ticker` (default: SPX, else the first equity)."""
    cards = read_cards(models_dir)
    predictions = walkforward_predictions(models_dir)
    chosen = model or served_model(cards, predictions)
    if chosen not in predictions:
        raise ValueError(f"no test predictions for {chosen!r}; have {_ordered(predictions)}")
    symbol = ticker or fan_ticker(predictions[chosen]["ticker"])
    if symbol not in set(predictions[chosen]["ticker"]):
        raise ValueError(f"{chosen} has no test predictions for {symbol!r}")
    out.mkdir(parents=True, exist_ok=True)
    files = PlotFiles(
        out / SKILL_FILE, out / RELIABILITY_FILE, out / FAN_FILE, chosen, symbol, cards.profile
    )
    skill_per_fold(cards).to_csv(files.skill, index=False)
    reliability(predictions).to_csv(files.reliability, index=False)
    fan_chart(predictions[chosen], chosen, symbol).to_csv(files.fan_chart, index=False)
    return files


def log_evaluation(
    reports: Sequence[Path],
    plots: PlotFiles,
    tracking_uri: str,
    artifact_root: Path = registry.MLRUNS / "artifacts",
) -> str:
    """Log the report and the plot files in one run of the evaluate experiment; its run id."""
    registry.configure(tracking_uri, artifact_root)
    registry.experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"evaluate-{plots.profile}") as run:
        mlflow.set_tags(
            {
                "profile": plots.profile,
                "fan_chart.model": plots.model,
                "fan_chart.ticker": plots.ticker,
            }
        )
        for path in reports:
            mlflow.log_artifact(str(path))
        for path in plots.paths:
            mlflow.log_artifact(str(path), artifact_path="plots")
    return run.info.run_id
