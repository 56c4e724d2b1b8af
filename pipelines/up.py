"""`stockcopilot up`: everything a fresh machine needs to serve the product."""

from __future__ import annotations

import asyncio
import signal
import threading

import structlog
import uvicorn
from rich.console import Console

from api.app import create_app
from api.logging import adopt_library_loggers
from api.settings import Settings
from pipelines.embedded import resolved_settings
from pipelines.first_run import ensure_classical_champion
from pipelines.ingest import bars_stored, ingest_bundled
from pipelines.warmup import Warmup, plan_warmup

log = structlog.get_logger(__name__)


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


def _serve_in_process(ready: Settings, console: Console, warmup: Warmup) -> None:
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
    threading.Thread(target=_start_when_listening, args=(server, warmup), daemon=True).start()
    try:
        server.run()
    finally:
        warmup.stop()


def _start_when_listening(server: uvicorn.Server, warmup: Warmup) -> None:
    while not server.started and not server.should_exit:
        threading.Event().wait(0.1)  # uvicorn signals start-up only through this flag
    if server.started:
        warmup.start()


def _serve_with_ray(ready: Settings, console: Console, warmup: Warmup) -> None:
    """Local Ray + the whole Serve application; blocks until Ctrl-C, then stops Ray."""
    import ray
    from ray import serve

    from serving.app import build_app, start_local_ray
    from serving.config import ServeAppConfig

    adopt_library_loggers()  # Ray and Serve attach their own handlers on import
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
        warmup.start()
        threading.Event().wait()  # until Ctrl-C or SIGTERM raises KeyboardInterrupt here
    finally:
        console.print("stopping ...")
        warmup.stop()
        serve.shutdown()
        ray.shutdown()


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt wherever start-up is, so every `finally`
    stops what was started (Ray, then the embedded services). Installed explicitly: a process
    started in the background inherits an ignored SIGINT, and SIGTERM must clean up too."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


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
    """Start services, prepare data and the classical champion on first run, serve, then do
    the rest of a first run's work in the background (pipelines.warmup) until Ctrl-C."""
    _stop_on_signals()
    try:
        _run(settings, console, use_ray)
    except KeyboardInterrupt:
        console.print("stopped")
    log.info("stopped")


def _run(settings: Settings, console: Console, use_ray: bool) -> None:
    with resolved_settings(settings) as ready:
        database_url = ready.database_url or ""
        if asyncio.run(bars_stored(database_url)) == 0:
            console.print("first run: ingesting the bundled market data ...")
            report = asyncio.run(ingest_bundled(database_url))
            console.print(f"ingested {report.rows_added} bars in {report.seconds:.1f} s")
        reseal_retired_key(ready, console)
        catch_up_market_data(ready, console)
        ensure_classical_champion(ready, console.print)
        adopt_library_loggers()  # MLflow and the training libraries are imported by now
        warmup = Warmup(ready, plan_warmup(ready), console)
        if use_ray:
            _serve_with_ray(ready, console, warmup)
        else:
            _announce(ready, console)
            _serve_in_process(ready, console, warmup)
