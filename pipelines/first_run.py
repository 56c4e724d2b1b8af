"""What a first `stockcopilot up` prepares, each step idempotent: the classical champion before
serving, then (pipelines.warmup, after ready) the classical challenger, the similarity index and
the quick network models."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from api.settings import Settings

type Report = Callable[[str], None]
SIMILARITY_WINDOW = 30


def _register(settings: Settings, models_dir: object | None = None) -> dict[str, str]:
    """Register what is trained under `models_dir` (default: models/) and not registered yet."""
    from pipelines.models import MODELS_DIR, connect, default_actor, register_trained
    from training import registry

    client = registry.configure(settings.mlflow_tracking_uri)

    async def register() -> dict[str, str]:
        conn = await connect(settings.database_url or "")
        try:
            return await register_trained(client, conn, default_actor(), models_dir or MODELS_DIR)
        finally:
            await conn.close()

    return asyncio.run(register())


def ensure_classical_champion(settings: Settings, report: Report) -> None:
    """Train and register the classical family once when it has no champion: every ticker in
    seconds, and the family that serves by default. Serving starts after this."""
    from contracts import CHAMPION
    from pipelines.train import train
    from training import registry

    client = registry.configure(settings.mlflow_tracking_uri)
    if registry.alias_version(client, "garch", CHAMPION) is not None:
        return
    report("no classical champion yet: training GARCH-t and GJR-t once (the quick profile) ...")
    train("garch", "quick", report)
    report(f"registered {_register(settings)}")


def missing_networks(settings: Settings) -> list[str]:
    """Network and ensemble families without a champion, with the members the ensemble is
    fitted on when their predictions are not on disk; members before the ensemble."""
    from contracts import CHAMPION, FAMILIES, FAMILY_KINDS, MEMBERS
    from pipelines.models import MODELS_DIR
    from training import registry

    client = registry.configure(settings.mlflow_tracking_uri)
    missing = {
        f
        for f in FAMILIES
        if FAMILY_KINDS[f] != "classical" and registry.alias_version(client, f, CHAMPION) is None
    }
    if any(FAMILY_KINDS[f] == "ensemble" for f in missing):
        missing |= {
            f
            for f in MEMBERS
            if FAMILY_KINDS[f] != "classical" and not (MODELS_DIR / f / "run.json").exists()
        }
    return [f for f in FAMILIES if f in missing]


def ensure_network_models(settings: Settings, families: list[str], report: Report) -> None:
    """Train the quick profile of each family and register it as soon as it is trained, so
    its deployment starts serving it while the next one trains."""
    from api.logging import adopt_library_loggers
    from pipelines.train import train

    for family in families:
        train(family, "quick", report)
        adopt_library_loggers()  # Lightning attaches its handlers on first import
        report(f"registered {_register(settings)}")


def needs_classical_challenger(settings: Settings) -> bool:
    """A first run's classical family has one version, its champion, and no challenger. Once
    an operator or the live guard removes the challenger, it is never registered again."""
    from contracts import CHALLENGER, model_name
    from training import registry

    client = registry.configure(settings.mlflow_tracking_uri)
    if registry.alias_version(client, "garch", CHALLENGER) is not None:
        return False
    return len(client.search_model_versions(f"name = '{model_name('garch')}'")) == 1


def ensure_classical_challenger(settings: Settings, report: Report) -> None:
    """Register the other GARCH-type model (GJR-t or GARCH-t, whichever lost on validation) as
    the classical family's challenger: the feed then forecasts every instrument with both after
    each replayed session, so the live A/B test plays out on `make up` (see
    GET /api/v1/models/garch/ab)."""
    from pipelines.models import MODELS_DIR
    from pipelines.train import train_classical

    challengers = MODELS_DIR / "challengers"
    report("training the classical challenger (the runner-up GARCH-type model) ...")
    train_classical("quick", report, challengers, pick="weaker")
    report(f"registered challenger {_register(settings, challengers)}")


def similarity_index_built(settings: Settings, window: int = SIMILARITY_WINDOW) -> bool:
    from api.db.similarity import ReturnWindowRepository
    from pipelines.models import connect

    async def built() -> bool:
        conn = await connect(settings.database_url or "")
        try:
            return await ReturnWindowRepository(conn).built(window)
        finally:
            await conn.close()

    return asyncio.run(built())


def ensure_similarity_index(
    settings: Settings, report: Report, window: int = SIMILARITY_WINDOW
) -> None:
    """Embed every ticker's return windows once, so similarity search works."""
    from api.services.similarity import build
    from pipelines.models import connect

    async def run() -> None:
        conn = await connect(settings.database_url or "")
        try:
            report(f"indexing {window}-bar return windows for similarity search (pgvector) ...")
            built = await build(conn, window)
            report(f"indexed {built.rows} return windows")
        finally:
            await conn.close()

    asyncio.run(run())


def ensure_champions(settings: Settings, report: Report) -> None:
    """Every family's champion, trained now if missing (benchmarks that need them all)."""
    ensure_classical_champion(settings, report)
    ensure_network_models(settings, missing_networks(settings), report)
