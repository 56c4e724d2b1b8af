"""Where an in-process prediction request spends its time, and how many round trips it makes.

    uv run py-spy record -r 250 -f raw -o /tmp/path.txt -- python -m benchmarks.profile_path
    uv run python -m benchmarks.profile_path --summarise /tmp/path.txt

The first command runs the API in this process (the `--no-ray` path) on loopback, and a client
in a process of its own sends signed-in prediction requests for `--seconds`, uncached (a
distinct ticker and as-of date each) or cached (`--cached`), while py-spy samples the server's
threads; the client also counts the Postgres and Redis round trips one request makes. The
second reads py-spy's collapsed stacks and prints the frames that hold the most of the
request's samples, inclusive.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import random
import tempfile
import threading
import time
from pathlib import Path

import httpx

from api.settings import Settings
from benchmarks.common import free_port, in_process_server_config
from benchmarks.serving import DATES, TICKERS, signed_in
from pipelines.embedded import resolved_settings
from pipelines.first_run import ensure_champions
from pipelines.ingest import bars_stored, ingest_bundled


def serve(settings: Settings, seconds: float, cached: bool, family: str) -> None:
    """The API in this process (the one py-spy samples), until the client process is done."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(in_process_server_config(settings, port))
    client = multiprocessing.get_context("spawn").Process(
        target=_client, args=(settings, port, seconds, cached, family)
    )
    client.start()

    def stop_when_done() -> None:
        client.join()
        server.should_exit = True

    threading.Thread(target=stop_when_done, daemon=True).start()
    server.run()


def _client(settings: Settings, port: int, seconds: float, cached: bool, family: str) -> None:
    asyncio.run(drive(settings, port, seconds, cached, family))


async def drive(settings: Settings, port: int, seconds: float, cached: bool, family: str) -> None:
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(base_url=base) as probe:
        while time.monotonic() < deadline:
            try:
                (await probe.get("/healthz")).raise_for_status()
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    headers = await signed_in(settings)
    sent = 0
    # uncached: a (ticker, as-of) pair no earlier run asked for (the cache outlives a run)
    start = random.randrange(len(DATES) * len(TICKERS))
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            n = 0 if cached else start + sent
            ticker, day = TICKERS[n % len(TICKERS)], DATES[-1 - (n // len(TICKERS)) % len(DATES)]
            response = await client.get(
                f"/api/v1/predictions/{ticker}", params={"model": family, "as_of": day}
            )
            response.raise_for_status()
            sent += 1
        print(f"{sent} requests in {seconds:.0f} s ({'cached' if cached else 'uncached'})")
        for kind in ("uncached", "cached"):
            pg, rd = await round_trips(settings, client, family, kind == "cached")
            print(f"round trips per {kind} request: Postgres {pg:.1f}, Redis {rd:.1f}")


async def round_trips(
    settings: Settings, client: httpx.AsyncClient, family: str, cached: bool, n: int = 20
) -> tuple[float, float]:
    """Postgres statements (committed transactions: every asyncpg query outside a transaction
    is one) and Redis commands per request, averaged over `n` requests; the batched prediction
    log's writes are counted too (they are off the request path but not free). Redis counts the
    commands a Lua script runs as well (the rate limiter's GET and SET per key), though the
    script is one round trip."""
    import asyncpg
    from redis.asyncio import Redis

    conn = await asyncpg.connect(settings.database_url)
    redis = Redis.from_url(settings.redis_url or "")
    query = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"

    async def counts() -> tuple[int, collections.Counter[str]]:
        # Postgres backends publish their counters once idle for 10 s (PGSTAT_IDLE_INTERVAL)
        await asyncio.sleep(11)
        stats = await redis.info("commandstats")
        calls = collections.Counter(
            {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
        )
        return await conn.fetchval(query), calls

    try:
        for _ in range(2):  # warm: the cached entry exists, the routing and weights are read
            await client.get(f"/api/v1/predictions/{TICKERS[0]}", params={"model": family})
        pg0, rd0 = await counts()
        for _ in range(n):
            pick = random.randrange(len(DATES) * len(TICKERS))
            day = DATES[-1] if cached else DATES[pick // len(TICKERS)]
            ticker = TICKERS[0] if cached else TICKERS[pick % len(TICKERS)]
            response = await client.get(
                f"/api/v1/predictions/{ticker}", params={"model": family, "as_of": day}
            )
            response.raise_for_status()
        await asyncio.sleep(0.5)
        pg1, rd1 = await counts()
        # the counting itself: one statement and one command (INFO) per `counts()`
        commands = rd1 - rd0
        commands["info"] -= 1
        print("  Redis commands per request:", {k: v / n for k, v in commands.items() if v})
        return (pg1 - pg0 - 1) / n, commands.total() / n
    finally:
        await conn.close()
        await redis.aclose()


def summarise(path: Path, top: int) -> None:
    """Inclusive shares of the request's own time (samples inside a route's handler), per
    frame, from py-spy's collapsed (`-f raw`) stacks; the framework chain every request passes
    through (middlewares, routing) is left out, its total is the first line."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "APIRoute.handle" not in stack:
            continue  # idle loop, client, start-up
        samples = int(count)
        total += samples
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            key = f"{name} ({where.split(':')[0].split('site-packages/')[-1]})"
            if key not in seen:
                inclusive[key] += samples
                seen.add(key)
    print(f"{total} samples inside request handling; by inclusive share:")
    chain = max(inclusive.values())
    for key, samples in inclusive.most_common(top + 40):
        if samples < chain:
            print(f"  {100 * samples / total:5.1f} %  {key}")
            top -= 1
        if top == 0:
            break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--cached", action="store_true")
    parser.add_argument("--family", default="lstm")
    parser.add_argument("--summarise", type=Path, help="py-spy raw output to summarise")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the embedded services and models here (reruns skip set-up)",
    )
    args = parser.parse_args()
    if args.summarise:
        summarise(args.summarise, args.top)
        return
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        base = Settings(
            data_dir=args.data_dir or Path(tmp),
            database_url=None,
            redis_url=None,
            log_json=True,
            log_level="WARNING",
            feed_mode="off",
            rate_limit_default_per_min=10**9,
        )
        with resolved_settings(base) as settings:
            if asyncio.run(bars_stored(settings.database_url or "")) == 0:
                asyncio.run(ingest_bundled(settings.database_url or "", show_progress=False))
            from rich.console import Console

            ensure_champions(settings, Console(stderr=True).print)
            serve(settings, args.seconds, args.cached, args.family)


if __name__ == "__main__":
    main()
