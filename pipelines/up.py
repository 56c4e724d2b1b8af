"""`stockcopilot up`: everything a fresh machine needs to serve the product."""

from __future__ import annotations

import asyncio
import signal
import threading

import structlog
import uvicorn
from rich.console import Console

from api.app import create_app
from api.settings import Settings
from pipelines.embedded import resolved_settings
from pipelines.ingest import bars_stored, ingest_bundled

log = structlog.get_logger(__name__)


def ensure_champions(settings: Settings, console: Console) -> None:
    """Train and register the quick profile once if any family lacks a champion: the classical
    family first (every ticker, in seconds: the champion that serves by default), then the
    quick networks and the ensemble, which are smoke-test challengers to it."""
    from contracts import CHAMPION, FAMILIES, MEMBERS
    from pipelines.models import MODELS_DIR, connect, default_actor, register_trained
    from pipelines.train import train
    from training import registry

    client = registry.configure(settings.mlflow_tracking_uri)
    missing = {f for f in FAMILIES if registry.alias_version(client, f, CHAMPION) is None}
    if not missing:
        return
    if "ensemble" in missing:  # the ensemble is fitted on its members' stored predictions
        missing |= {f for f in MEMBERS if not (MODELS_DIR / f / "run.json").exists()}
    order = [f for f in FAMILIES if f in missing]  # members before the ensemble
    console.print(f"no champion for {', '.join(order)}: training the quick profile once ...")
    for family in order:
        train(family, "quick", console.print)

    async def register() -> dict[str, str]:
        conn = await connect(settings.database_url or "")
        try:
            return await register_trained(client, conn, default_actor())
        finally:
            await conn.close()

    console.print(f"registered {asyncio.run(register())}")
    if "garch" in missing:
        ensure_classical_challenger(settings, console)


def ensure_classical_challenger(settings: Settings, console: Console) -> None:
    """On a first run, register the other GARCH-type model (GJR-t or GARCH-t, whichever lost on
    validation) as the classical family's challenger: the feed then forecasts every instrument
    with both after each replayed session, so the live A/B test plays out on `make up` (see
    GET /api/v1/models/garch/ab). Never re-registered once an operator or the live guard has
    removed it."""
    from contracts import CHALLENGER
    from pipelines.models import MODELS_DIR, connect, default_actor, register_trained
    from pipelines.train import train_classical
    from training import registry

    client = registry.configure(settings.mlflow_tracking_uri)
    if registry.alias_version(client, "garch", CHALLENGER) is not None:
        return
    challengers = MODELS_DIR / "challengers"
    console.print("training the classical challenger (the runner-up GARCH-type model) ...")
    train_classical("quick", console.print, challengers, pick="weaker")

    async def register() -> dict[str, str]:
        conn = await connect(settings.database_url or "")
        try:
            return await register_trained(client, conn, default_actor(), challengers)
        finally:
            await conn.close()

    console.print(f"registered challenger {asyncio.run(register())}")


def reseal_retired_key(settings: Settings, console: Console) -> None:
    """Data an older release sealed with its public development key: sealed again with this
    folder's keys, once, so its accounts can still sign in (pipelines/dev_key.py)."""
    from api.security.crypto import Keyring
    from pipelines.dev_key import reseal, sealed_with_retired_key
    from pipelines.models import connect

    async def run() -> None:
        conn = await connect(settings.database_url or "")
        try:
            if await sealed_with_retired_key(conn):
                done = await reseal(conn, Keyring.from_settings(settings))
                console.print(
                    f"re-sealed {done.accounts} account(s) and {done.secrets} secret(s) from the "
                    "retired development key with this data folder's keys"
                )
        finally:
            await conn.close()

    asyncio.run(run())


def catch_up_market_data(settings: Settings, console: Console) -> None:
    """`stockcopilot data update` before serving, when the configured provider answers; one
    line saying so when none does (the data then stays as bundled)."""
    from datetime import timedelta

    from api.app import provider_from
    from api.db.pool import create_pool
    from api.services.bar_sync import TickerUpdate
    from features.live import ProviderError
    from features.sessions import market_state
    from pipelines.data_cli import print_summary, update_bars

    if not settings.market_data_catch_up:
        return
    try:
        provider = provider_from(settings)
        last = market_state().last_completed
        provider.daily_bars("KO", last - timedelta(days=7), last)  # one cheap probe
    except (ProviderError, ValueError, OSError) as exc:
        name = settings.market_data_provider
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        console.print(
            f"market data: {name} not reachable ({reason}); the data stays as bundled",
            soft_wrap=True,
        )
        return

    async def run() -> list[TickerUpdate]:
        pool = await create_pool(settings)
        try:
            return await update_bars(pool, provider, None)
        finally:
            await pool.close()

    console.print(f"market data: updating every instrument from {provider.name} ...")
    print_summary(console, asyncio.run(run()), provider.name)


def ensure_similarity_index(settings: Settings, console: Console, window: int = 30) -> None:
    """Embed every ticker's return windows once, so similarity search works on first start."""
    from api.db.similarity import ReturnWindowRepository
    from api.services.similarity import build
    from pipelines.models import connect

    async def run() -> None:
        conn = await connect(settings.database_url or "")
        try:
            if await ReturnWindowRepository(conn).built(window):
                return
            with console.status(f"first run: indexing {window}-bar return windows (pgvector) ..."):
                report = await build(conn, window)
            console.print(f"indexed {report.rows} return windows for similarity search")
        finally:
            await conn.close()

    asyncio.run(run())


def _serve_in_process(ready: Settings, console: Console) -> None:
    """`--no-ray`: the same API and models in this process, behind uvicorn."""
    from serving.local import LocalPredictor
    from training import registry

    predictor = LocalPredictor(
        registry.configure(ready.mlflow_tracking_uri), alias_ttl_s=ready.alias_poll_s
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ready, predictor),
            host=ready.host,
            port=ready.port,
            log_config=None,
            access_log=False,
            proxy_headers=False,
        )
    )
    server.run()


def _serve_with_ray(ready: Settings, console: Console) -> None:
    """Local Ray + the whole Serve application; blocks until Ctrl-C, then stops Ray."""
    import ray
    from ray import serve

    from serving.app import build_app, start_local_ray
    from serving.config import ServeAppConfig

    context = start_local_ray(
        ready.trusted_proxies,
        include_dashboard=True,
        dashboard_host=ready.host,  # 0.0.0.0 in containers, so the published port works
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        serve.start(http_options={"host": ready.host, "port": ready.port})
        serve.run(build_app(ServeAppConfig(settings=ready)), name="stockcopilot", route_prefix="/")
        console.print(f"Ray dashboard: http://{context.dashboard_url}")
        _announce(ready, console)
        _wait_for_stop_signal()
        console.print("stopping ...")
    finally:
        serve.shutdown()
        ray.shutdown()


def _wait_for_stop_signal() -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM. Handlers are installed explicitly: a process
    started in the background inherits an ignored SIGINT, and SIGTERM must clean up too."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _announce(ready: Settings, console: Console) -> None:
    base = f"http://{ready.host}:{ready.port}"
    console.print(f"Stock Copilot API listening on {base}  (docs: {base}/docs)")
    ws = base.replace("http://", "ws://")
    console.print(f"WebSockets: {ws}/ws/real-time, {ws}/ws/predictions, {ws}/ws/notifications")
    if ready.feed_mode == "replay":
        start = ready.feed_replay_start or "a year before the newest bar"
        console.print(
            f"market feed: replaying stored bars from {start}, one trading day every "
            f"{ready.feed_interval_s:g} s (try: uv run python examples/live_client.py)"
        )
    else:
        console.print(f"market feed: {ready.feed_mode}")
    console.print("MLflow UI (promote/roll back models): uv run stockcopilot mlflow-ui")
    console.print(f"data folder: {ready.resolved_data_dir}  — Ctrl-C stops everything")


def run(settings: Settings, console: Console, use_ray: bool = True) -> None:
    """Start services, prepare data and models on first run, serve until Ctrl-C, then stop."""
    with resolved_settings(settings) as ready:
        database_url = ready.database_url or ""
        if asyncio.run(bars_stored(database_url)) == 0:
            console.print("first run: ingesting the bundled market data ...")
            report = asyncio.run(ingest_bundled(database_url))
            console.print(f"ingested {report.rows_added} bars in {report.seconds:.1f} s")
        reseal_retired_key(ready, console)
        catch_up_market_data(ready, console)
        ensure_champions(ready, console)
        ensure_similarity_index(ready, console)
        if use_ray:
            _serve_with_ray(ready, console)
        else:
            _announce(ready, console)
            _serve_in_process(ready, console)
    log.info("stopped")
