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
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import psutil

from api.settings import Settings
from benchmarks.common import free_port, in_process_server, percentile
from contracts import MARKET_TICKER, NETWORKS, ForecastRequest, SeriesInput
from features.datasets import load_universe
from pipelines.embedded import resolved_settings
from pipelines.first_run import ensure_champions
from pipelines.ingest import bars_stored, ingest_bundled
from serving.app import SERVE_ENV
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


Get = Callable[[str, Callable[[int], tuple[str, str]], int], Awaitable[None]]


async def uncached_and_cached(
    name: str, base: str, get: Get, offset: Iterator[int], concurrency: int, seconds: float
) -> list[Row]:
    """One prediction route behind `base`: distinct (ticker, as-of) per call, then one answer
    over and over from the cache."""
    pick = _uncached(next(offset))
    uncached = await measure(
        f"{name}, uncached", lambda i: get(base, pick, i), concurrency, seconds
    )
    fixed = _uncached(0)
    await get(base, fixed, 0)  # warm the cache entry
    cached = await measure(f"{name}, cached", lambda _: get(base, fixed, 0), concurrency, seconds)
    return [uncached, cached]


INGRESSES = {
    # Serve's Python HTTP proxy and Ray's default replica data plane
    "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"},
    # what `make up` runs (serving.app.SERVE_ENV): HAProxy ingress, gRPC between replicas
    "haproxy": SERVE_ENV,
}


async def run(args: argparse.Namespace, settings: Settings, prepared: tuple) -> list[Row]:
    from api.logging import configure_logging

    configure_logging(settings.log_level, settings.log_json)  # as the Serve ingress does
    rows: list[Row] = []
    # 2. plain FastAPI in-process (the --no-ray path) on loopback, in a process of its own
    with in_process_server(settings) as (local, pid):
        rows += await _measure_all(args, settings, prepared, local, pid)
    return rows


async def _measure_all(
    args: argparse.Namespace, settings: Settings, prepared: tuple, local: str, local_pid: int
) -> list[Row]:
    rows: list[Row] = []
    family, seconds = args.family, args.seconds
    # 1. raw forward: the network on one prepared window, no I/O
    bundle, bars = prepared
    closes = {t: bars[bars["ticker"] == t].tail(400) for t in ("AAPL", MARKET_TICKER)}
    by_date = {t: frame.set_index("date")["close"] for t, frame in closes.items()}
    window = bundle.window_set_closes({"AAPL": by_date["AAPL"]}, None, by_date[MARKET_TICKER])

    async def raw(_: int) -> object:
        return predict(bundle.module, window)

    rows.append(await measure("raw model forward", raw, 1, seconds))

    series = {
        t: SeriesInput.of(t, [d.date() for d in frame["date"]], list(frame["close"]))
        for t, frame in closes.items()
    }
    request = ForecastRequest(
        family=family, variant="champion", series=[series["AAPL"]], market=series[MARKET_TICKER]
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

        offset = itertools.count(step=100_000)
        for concurrency in (1, 16, 64):
            rows += await uncached_and_cached(
                "in-process FastAPI", local, get, offset, concurrency, seconds
            )
        # 3-5. the Ray Serve stack, once per ingress, each on a cluster of its own
        for ingress in args.ingress:
            rows += await _serve_stack(
                ingress, args, settings, request, get, offset, client, local_pid
            )
    return rows


async def _serve_stack(
    ingress: str,
    args: argparse.Namespace,
    settings: Settings,
    request: ForecastRequest,
    get: Get,
    offset: Iterator[int],
    client: httpx.AsyncClient,
    local_pid: int,
) -> list[Row]:
    import os

    import ray
    from ray import serve

    from serving.app import build_app, start_local_ray
    from serving.config import ServeAppConfig
    from serving.replicas import deployment_name

    family, seconds = args.family, args.seconds
    os.environ.update(INGRESSES[ingress])  # read by every process of the cluster started next
    start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
    serve.run(build_app(ServeAppConfig(settings=settings)), name="stockcopilot", route_prefix="/")
    full = f"http://127.0.0.1:{serve_port}"
    handle = serve.get_deployment_handle(deployment_name(family), app_name="stockcopilot")
    rows: list[Row] = []
    await get(full, _uncached(0), 0)  # every replica has loaded its champion; one answer back
    print(f"\nstack memory with the {ingress} ingress at the default replica counts:")
    MEMORY[ingress] = _stack_memory_gib(exclude=local_pid)[:2]

    async def bare(_: int) -> object:
        return await handle.forecast.remote(request)

    for concurrency in (1, 16, 64):
        rows += await uncached_and_cached(
            f"full stack ({ingress})", full, get, offset, concurrency, seconds
        )
        rows.append(await measure(f"bare Serve handle ({ingress})", bare, concurrency, seconds))

    first_day = next(offset) // 1000  # as-of dates no earlier measurement (or stack) asked for

    async def batch(size: int, i: int) -> None:
        response = await client.post(
            f"{full}/api/v1/predictions/batch",
            json={
                "tickers": (TICKERS + IMPORTED)[:size],
                "model": family,
                "as_of": DATES[-1 - (first_day + i) % len(DATES)],
            },
        )
        response.raise_for_status()

    rows.append(await measure(f"batch of 1 ({ingress})", lambda i: batch(1, i), 1, seconds))
    rows.append(
        await measure(f"batch of {BATCH} ({ingress})", lambda i: batch(BATCH, i), 1, seconds)
    )
    print(f"\nstack memory with the {ingress} ingress after the load (autoscaled):")
    _stack_memory_gib(exclude=local_pid)
    serve.shutdown()
    ray.shutdown()
    return rows


MEMORY: dict[str, tuple[float, float]] = {}


def prepare(settings: Settings, family: str) -> tuple:
    """The champion bundle and the bars, loaded before any timing starts."""
    from features.datasets import load_bundled_bars

    registry.configure(settings.mlflow_tracking_uri)
    bundle = registry.load_bundle(f"models:/{registry.model_name(family)}@champion")
    return bundle, load_bundled_bars()


def _stack_memory_gib(exclude: int) -> tuple[float, float, float]:
    """(RSS sum, PSS sum) of the serving stack's processes — this benchmark's descendants: Ray
    and its replicas, HAProxy, the embedded Postgres and Redis, never another cluster on the
    machine, nor the in-process server `exclude` — and this harness's own RSS. Prints the
    biggest processes."""
    me = psutil.Process()
    rss = pss = 0
    sizes = []
    for proc in me.children(recursive=True):
        if proc.pid == exclude:
            continue
        try:
            memory = proc.memory_full_info()
            name = " ".join(proc.cmdline()[:1] or [proc.name()])[:60]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += memory.rss
        pss += memory.pss
        sizes.append((memory.pss, memory.rss, name))
    for p, r, name in sorted(sizes, reverse=True)[:10]:
        print(f"    PSS {p / 2**30:5.2f} GiB  RSS {r / 2**30:5.2f} GiB  {name}")
    print(
        f"  total (Ray, Serve replicas, HAProxy, Postgres, Redis): RSS {rss / 2**30:.2f} GiB, "
        f"PSS {pss / 2**30:.2f} GiB (shared pages counted once); this harness (client, raw "
        f"model) RSS {me.memory_info().rss / 2**30:.2f} GiB, not included"
    )
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


def ratios(rows: list[Row], ingress: str) -> dict[str, float]:
    """The targets' ratios for one ingress, all from this run's rows."""
    by = {(r.name, r.concurrency): r for r in rows}

    def p50(name: str, c: int = 1) -> float:
        return by[(name, c)].p50_ms

    out = {}
    for c in (1, 16):
        out[f"cached_ratio_c{c}"] = p50(f"full stack ({ingress}), cached", c) / p50(
            "in-process FastAPI, cached", c
        )
    for c in (1, 16, 64):
        out[f"uncached_ratio_c{c}"] = (
            by[(f"full stack ({ingress}), uncached", c)].rps
            / by[(f"bare Serve handle ({ingress})", c)].rps
        )
    out["batch_ratio"] = p50(f"batch of {BATCH} ({ingress})") / p50(f"batch of 1 ({ingress})")
    raw = p50("raw model forward")
    out["inprocess_uncached_vs_raw"] = p50("in-process FastAPI, uncached") / raw
    out["inprocess_cached_vs_raw"] = p50("in-process FastAPI, cached") / raw
    out["stack_rss_gib"], out["stack_pss_gib"] = MEMORY[ingress]
    return out


TARGETS = {
    "cached_ratio_c1": ("≤", 1.5),
    "cached_ratio_c16": ("≤", 1.5),
    "uncached_ratio_c1": ("≥", 0.7),
    "uncached_ratio_c16": ("≥", 0.7),
    "uncached_ratio_c64": ("≥", 0.7),
    "batch_ratio": ("≤", 3.0),
    "inprocess_uncached_vs_raw": ("≤", 12.0),
    "inprocess_cached_vs_raw": ("≤", 5.0),
    "stack_rss_gib": ("≤", 6.0),
    "stack_pss_gib": ("≤", 4.0),
}


def report(rows: list[Row], ingresses: list[str], as_json: bool) -> None:
    print(f"\n{'path':34} {'conc':>4} {'n':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(
            f"{r.name:34} {r.concurrency:>4} {r.requests:>6} {r.rps:>8.1f} {r.p50_ms:>8.1f} "
            f"{r.p99_ms:>8.1f}"
        )
    found = {ingress: ratios(rows, ingress) for ingress in ingresses}
    print("\nratios (same run):")
    print(f"  {'ratio':28} " + " ".join(f"{i:>9}" for i in ingresses) + "   target")
    for key, (sign, bound) in TARGETS.items():
        values = " ".join(f"{found[i][key]:>9.2f}" for i in ingresses)
        print(f"  {key:28} {values}   {sign} {bound}")
    if as_json:  # the ingress `make up` runs, last line
        main_ingress = "haproxy" if "haproxy" in found else ingresses[-1]
        others = {
            f"{i}_{k}": round(v, 3)
            for i in ingresses
            if i != main_ingress
            for k, v in found[i].items()
        }
        print(json.dumps({k: round(v, 3) for k, v in found[main_ingress].items()} | others))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--family", default="lstm", choices=list(NETWORKS))
    parser.add_argument(
        "--ingress",
        nargs="+",
        default=["proxy", "haproxy"],
        choices=list(INGRESSES),
        help="Serve ingresses to measure side by side (each on a fresh cluster)",
    )
    parser.add_argument("--json", action="store_true", help="print the ratios as JSON, last")
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

            ensure_champions(settings, Console(stderr=True).print)
            prepared = prepare(settings, args.family)
            asyncio.run(add_imported_tickers(settings, prepared[1]))
            report(asyncio.run(run(args, settings, prepared)), args.ingress, args.json)


if __name__ == "__main__":
    main()
