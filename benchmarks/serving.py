"""Serving benchmark: the same prediction through every layer, side by side, in one run.

    uv run python -m benchmarks.serving [--seconds 4] [--family lstm]

Loopback only, each measurement bounded in time. Layers: the raw model forward; the API behind
plain FastAPI in-process (`stockcopilot up --no-ray`); the bare Serve handle; the full stack
through the Serve proxy, uncached and cached; a batch of 100 tickers against one.
Absolute numbers vary on a shared machine; the ratios, measured in the same run, are the result.

The bundle has 21 equities; the batch of 100 adds 79 tickers imported through the CSV import
(`BX000`…, copies of the real equities' closes in the benchmark's own temporary database), the
way a user's imported tickers are predicted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import psutil

from api.app import create_app
from api.settings import Settings
from benchmarks.common import free_port, percentile
from contracts import ForecastRequest, SeriesInput
from features.datasets import load_universe
from pipelines.embedded import resolved_settings
from pipelines.ingest import bars_stored, ingest_bundled
from pipelines.up import ensure_champions
from serving.local import LocalPredictor
from training import registry
from training.fit import predict

TICKERS = [i.ticker for i in load_universe().instruments if i.asset_type == "equity"]
BATCH = 100
IMPORTED = [f"BX{i:03d}" for i in range(BATCH - len(TICKERS))]
DATES = [str(d.date()) for d in pd.bdate_range("2016-01-04", "2022-12-28")]


@dataclass
class Row:
    name: str
    concurrency: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float


async def measure(
    name: str, call: Callable[[int], Awaitable[object]], concurrency: int, seconds: float
) -> Row:
    """Run `call(i)` from `concurrency` workers for `seconds`; latency per call. One untimed
    call first, so first-use costs (handle set-up, a model's first load) are not measured."""
    await call(-1)
    latencies: list[float] = []
    counter = itertools.count()
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call(next(counter))
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return Row(
        name,
        concurrency,
        len(ordered),
        len(ordered) / elapsed,
        1000 * statistics.median(ordered),
        1000 * percentile(ordered, 0.99),
    )


def _uncached(ticker_base: int) -> Callable[[int], tuple[str, str]]:
    """A distinct (ticker, as-of) per call, so nothing is answered from the cache."""

    def pick(i: int) -> tuple[str, str]:
        n = ticker_base + i
        return TICKERS[n % len(TICKERS)], DATES[(n // len(TICKERS)) % len(DATES)]

    return pick


async def run(args: argparse.Namespace, settings: Settings, prepared: tuple) -> list[Row]:
    import ray
    import uvicorn
    from ray import serve

    from api.logging import configure_logging
    from serving.app import build_app, start_local_ray
    from serving.config import ServeAppConfig

    configure_logging(settings.log_level, settings.log_json)  # as the Serve ingress does

    rows: list[Row] = []
    family, seconds = args.family, args.seconds
    predictor = LocalPredictor(registry.configure(settings.mlflow_tracking_uri))
    # 1. raw forward: the network on one prepared window, no I/O
    bundle, bars = prepared
    window = bundle.window_set(bars[bars["ticker"] == "AAPL"])

    async def raw(_: int) -> object:
        return predict(bundle.module, window)

    rows.append(await measure("raw model forward", raw, 1, seconds))

    # 2. plain FastAPI in-process (the --no-ray path) on loopback
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, predictor),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # noqa: ASYNC110 - polls uvicorn's flag in another thread
        await asyncio.sleep(0.1)
    local = f"http://127.0.0.1:{port}"

    # 3-5. Ray Serve
    start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
    serve.run(build_app(ServeAppConfig(settings=settings)), name="stockcopilot", route_prefix="/")
    full = f"http://127.0.0.1:{serve_port}"
    handle = serve.get_deployment_handle(
        {
            "lstm": "LSTMForecaster",
            "transformer": "TransformerForecaster",
            "hybrid": "HybridForecaster",
        }[family],
        app_name="stockcopilot",
    )
    closes = bars[bars["ticker"] == "AAPL"].tail(400)
    request = ForecastRequest(
        family=family,
        variant="champion",
        series=[SeriesInput.of("AAPL", [d.date() for d in closes["date"]], list(closes["close"]))],
    )

    headers = await signed_in(settings)
    async with httpx.AsyncClient(
        timeout=120, limits=httpx.Limits(max_connections=128), headers=headers
    ) as client:

        async def get(base: str, pick: Callable[[int], tuple[str, str]], i: int) -> None:
            ticker, as_of = pick(i)
            response = await client.get(
                f"{base}/api/v1/predictions/{ticker}", params={"model": family, "as_of": as_of}
            )
            response.raise_for_status()

        async def bare(_: int) -> object:
            return await handle.forecast.remote(request)

        offset = itertools.count(step=100_000)
        for concurrency in (1, 16, 64):
            for name, base in (("in-process FastAPI", local), ("full stack (proxy)", full)):
                pick = _uncached(next(offset))
                rows.append(
                    await measure(
                        f"{name}, uncached",
                        lambda i, b=base, p=pick: get(b, p, i),
                        concurrency,
                        seconds,
                    )
                )
                fixed = _uncached(0)
                await get(base, fixed, 0)  # warm the cache entry
                rows.append(
                    await measure(
                        f"{name}, cached",
                        lambda i, b=base, f=fixed: get(b, f, 0),
                        concurrency,
                        seconds,
                    )
                )
            rows.append(await measure("bare Serve handle", bare, concurrency, seconds))

        async def batch(size: int, i: int) -> None:
            response = await client.post(
                f"{full}/api/v1/predictions/batch",
                json={
                    "tickers": (TICKERS + IMPORTED)[:size],
                    "model": family,
                    "as_of": DATES[-1 - i % 500],
                },
            )
            response.raise_for_status()

        rows.append(await measure("batch of 1 (proxy)", lambda i: batch(1, i), 1, seconds))
        rows.append(
            await measure(f"batch of {BATCH} (proxy)", lambda i: batch(BATCH, i), 1, seconds)
        )
    rss, pss, harness = _stack_memory_gib()
    serve.shutdown()
    ray.shutdown()
    server.should_exit = True
    thread.join(timeout=30)  # let the in-process app close its pools before Postgres stops
    print(
        f"\nstack memory (Ray + Serve replicas + Postgres + Redis): RSS {rss:.2f} GiB, "
        f"PSS {pss:.2f} GiB (shared pages counted once); benchmark harness itself (client, "
        f"in-process app, raw model) RSS {harness:.2f} GiB, not included"
    )
    return rows


def prepare(settings: Settings, family: str) -> tuple:
    """The champion bundle and the bars, loaded before any timing starts."""
    from features.datasets import load_bundled_bars

    registry.configure(settings.mlflow_tracking_uri)
    bundle = registry.load_bundle(f"models:/{registry.model_name(family)}@champion")
    return bundle, load_bundled_bars()


def _stack_memory_gib() -> tuple[float, float, float]:
    """(RSS sum, PSS sum) of the serving stack's processes, and this harness's own RSS."""
    me = psutil.Process()
    rss = pss = 0
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.pid == me.pid or not any(
            k in cmd
            for k in (
                "ray::",
                "raylet",
                "gcs_server",
                "ray/dashboard",
                "ray/_private",
                "ray/autoscaler",
                "postgres",
                "redis-server",
            )
        ):
            continue
        try:
            memory = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += memory.rss
        pss += memory.pss
    return rss / 2**30, pss / 2**30, me.memory_info().rss / 2**30


async def signed_in(settings: Settings) -> dict[str, str]:
    """A benchmark user's Authorization header (every prediction route needs a caller)."""
    import uuid

    from redis.asyncio import Redis

    from api.db.pool import create_pool
    from api.db.users import UserRepository
    from api.security.crypto import Keyring
    from api.services.auth import AuthService, create_account

    pool = await create_pool(settings)
    redis = Redis.from_url(settings.redis_url or "", decode_responses=True)
    try:
        keyring = Keyring.from_settings(settings)
        email = f"bench-{uuid.uuid4().hex}@example.com"
        user = await create_account(UserRepository(pool), keyring, email, "benchmark", None)
        pair = await AuthService(pool, redis, settings, keyring).start_session(user, "bench", None)
        return {"Authorization": f"Bearer {pair.access_token}"}
    finally:
        await redis.aclose()
        await pool.close()


async def add_imported_tickers(settings: Settings, bars: pd.DataFrame) -> None:
    """The batch's extra tickers, through the same CSV import users have."""
    from api.db.pool import create_pool
    from api.services.market_data import MarketDataService

    pool = await create_pool(settings)
    try:
        service = MarketDataService(pool)
        for i, name in enumerate(IMPORTED):
            source = bars[bars["ticker"] == TICKERS[i % len(TICKERS)]]
            csv = "date,close\n" + "".join(
                f"{d.date()},{c}\n" for d, c in zip(source["date"], source["close"], strict=True)
            )
            await service.import_csv(name, csv.encode(), f"{name}.csv", None, None)
    finally:
        await pool.close()


def report(rows: list[Row]) -> None:
    print(f"\n{'path':34} {'conc':>4} {'n':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(
            f"{r.name:34} {r.concurrency:>4} {r.requests:>6} {r.rps:>8.1f} {r.p50_ms:>8.1f} "
            f"{r.p99_ms:>8.1f}"
        )
    by = {(r.name, r.concurrency): r for r in rows}
    print("\nratios (same run):")
    for c in (1, 16, 64):
        cached = (
            by[("full stack (proxy), cached", c)].p50_ms
            / by[("in-process FastAPI, cached", c)].p50_ms
        )
        uncached = by[("full stack (proxy), uncached", c)].rps / by[("bare Serve handle", c)].rps
        print(
            f"  c={c:>2}: cached full-stack p50 / in-process FastAPI p50 = {cached:.2f} "
            f"(target ≤ 1.5); uncached full-stack req/s / bare handle req/s = {uncached:.2f} "
            f"(target ≥ 0.5)"
        )
    one = by[("batch of 1 (proxy)", 1)].p50_ms
    many = by[(f"batch of {BATCH} (proxy)", 1)]
    print(f"  {many.name} p50 / batch of 1 p50 = {many.p50_ms / one:.2f} (target ≤ 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--family", default="lstm", choices=["lstm", "transformer", "hybrid"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        base = Settings(
            data_dir=Path(tmp),
            database_url=None,
            redis_url=None,
            log_json=True,
            log_level="WARNING",
            feed_mode="off",  # a replay would add load the measurement does not ask for
            # one loopback client measures throughput: per-client limits would cap it
            rate_limit_default_per_min=10**9,
        )
        with resolved_settings(base) as settings:
            if asyncio.run(bars_stored(settings.database_url or "")) == 0:
                asyncio.run(ingest_bundled(settings.database_url or "", show_progress=False))
            from rich.console import Console

            ensure_champions(settings, Console(stderr=True))
            prepared = prepare(settings, args.family)
            asyncio.run(add_imported_tickers(settings, prepared[1]))
            report(asyncio.run(run(args, settings, prepared)))


if __name__ == "__main__":
    main()
