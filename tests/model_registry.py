"""A real MLflow registry holding tiny trained models of every family, one per test session.

Its fixtures are registered by tests/conftest.py, so every test package that needs a predictor
shares the same registry (MLflow's tracking URI is process-global: two registries in one session
would point each other's model URIs at the wrong store). Heavy imports happen inside the
fixtures, so sessions that never train pay nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from tests.utils import TINY

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from training.bundle import ClassicalBundle, EnsembleBundle, ForecastBundle

CFG = TINY
TICKERS = ("AAPL", "KO", "XOM", "JPM", "MSFT")


def log_and_register(
    bundle: ForecastBundle | ClassicalBundle | EnsembleBundle, family: str, directory: Path
) -> tuple[str, str]:
    import mlflow

    from training import registry

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
    """garch/lstm/transformer/hybrid champions (hybrid also has a challenger) and an ensemble
    of all four."""
    from contracts import MEMBERS, NETWORKS
    from features.windows import FeatureConfig
    from training import registry
    from training.baselines import ClassicalFits
    from training.bundle import ClassicalBundle, EnsembleBundle, ForecastBundle
    from training.data import Vocab, build_panel, market_close
    from training.walkforward import fit_on_fold, folds_for

    root = registry_root
    client = registry.configure(registry_uri, root / "artifacts")
    bars = bundled_bars[bundled_bars["ticker"].isin(TICKERS) & (bundled_bars["date"] >= "2019")]
    panel = build_panel(
        bars, FeatureConfig(window=CFG.window), CFG.horizons, market=market_close(bundled_bars)
    )
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
    fits = ClassicalFits(panel)
    fitted = {t: fits.fitted("garch", t, fold.fit_end) for t in TICKERS}
    garch = ClassicalBundle(
        "garch",
        CFG.horizons,
        {t: f.params for t, f in fitted.items() if f is not None},
        {t: {h: list(q) for h, q in f.z.items()} for t, f in fitted.items() if f is not None},
        card,
    )
    version, uri = log_and_register(garch, "garch", root / "garch")
    registry.set_alias(client, "garch", "champion", version)
    members = {"garch": {"run_id": "", "model_uri": uri}}
    for family in NETWORKS:
        module, scaler = fit_on_fold(family, CFG, panel, vocab, fold)
        bundle = ForecastBundle.from_module(module, panel.config, scaler, vocab, card)
        version, uri = log_and_register(bundle, family, root / family)
        registry.set_alias(client, family, "champion", version)
        members[family] = {"run_id": "", "model_uri": uri}
    challenger, _ = log_and_register(bundle, "hybrid", root / "hybrid-2")
    registry.set_alias(client, "hybrid", "challenger", challenger)
    weights = {h: dict.fromkeys(MEMBERS, 1 / len(MEMBERS)) for h in CFG.horizons}
    version, _ = log_and_register(EnsembleBundle(weights, members), "ensemble", root / "ensemble")
    registry.set_alias(client, "ensemble", "champion", version)
    return client
