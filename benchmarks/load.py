"""Load and soak: a bounded loopback mix against the whole API, with memory watched.

    uv run python -m benchmarks.load [--seconds 600] [--users 12] [--sockets 20]

The server runs in a child process (uvicorn, the in-process predictor over the registered
models, the replay feed at one trading day per second, embedded Postgres and Redis in a
temporary folder). Virtual users loop over a mix: quotes, stock history, forecasts (mostly
cached, some for a fresh as-of date), portfolio writes, a login now and then; `--sockets`
WebSocket clients follow quotes and forecasts pushed by the feed. Everything targets 127.0.0.1
and stops after `--seconds`.

Printed: sustained requests/s, p50/p99 per kind, 5xx and other failures by kind, WebSocket
messages received, and the server's RSS after warm-up and at the end (growth %, target ≤ 10 %).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import connect

TICKERS = ["AAPL", "MSFT", "KO", "XOM", "JPM", "PG", "JNJ", "WMT", "PEP", "HD"]
DATES = [f"2021-{m:02d}-{d:02d}" for m in range(1, 13) for d in (4, 11, 18, 25)]
PASSWORD = "load test password 123"
WARM_UP_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int) -> None:
    """The child: the API with the in-process predictor, on the environment's services."""
    import uvicorn

    from api.app import create_app
    from api.logging import configure_logging
    from api.settings import Settings
    from serving.local import LocalPredictor
    from training import registry

    settings = Settings()
    configure_logging("WARNING", True)
    predictor = LocalPredictor(registry.configure(settings.mlflow_tracking_uri))
    app = create_app(settings, predictor)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


class Stats:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.failures: Counter[tuple[str, int | str]] = Counter()
        self.server_errors = 0
        self.socket_messages: Counter[str] = Counter()

    def record(self, kind: str, started: float, status: int | str) -> None:
        self.latency[kind].append(time.perf_counter() - started)
        if isinstance(status, int) and status >= 500:
            self.server_errors += 1
        if not (isinstance(status, int) and status < 400):
            self.failures[(kind, status)] += 1


async def timed(stats: Stats, kind: str, call: asyncio.Future | object) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await call  # type: ignore[misc]
    except httpx.HTTPError as exc:
        stats.record(kind, started, type(exc).__name__)
        return None
    stats.record(kind, started, response.status_code)
    return response


async def user(base: str, n: int, deadline: float, stats: Stats) -> None:
    email = f"load-{n}-{os.getpid()}@example.com"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "display_name": f"Load {n}"},
        )
        login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        made = await client.post("/api/v1/portfolio", json={"name": "load"})
        portfolio = made.json()["id"]
        await client.post(
            f"/api/v1/portfolio/{portfolio}/transactions",
            json={"type": "deposit", "date": "2021-01-04", "amount": "1000000"},
        )
        rng = random.Random(n)
        i = 0
        while time.monotonic() < deadline:
            i += 1
            ticker = rng.choice(TICKERS)
            roll = rng.random()
            if i % 200 == 0:
                await timed(
                    stats,
                    "login",
                    client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}),
                )
            elif roll < 0.35:
                await timed(stats, "quote", client.get(f"/api/v1/stocks/{ticker}/quote"))
            elif roll < 0.55:
                await timed(
                    stats,
                    "history",
                    client.get(f"/api/v1/stocks/{ticker}/history", params={"start": "2022-06-01"}),
                )
            elif roll < 0.80:
                await timed(
                    stats,
                    "prediction (cached)",
                    client.get(f"/api/v1/predictions/{ticker}", params={"model": "lstm"}),
                )
            elif roll < 0.88:
                await timed(
                    stats,
                    "prediction (fresh)",
                    client.get(
                        f"/api/v1/predictions/{ticker}",
                        params={"model": "lstm", "as_of": rng.choice(DATES)},
                    ),
                )
            else:
                await timed(
                    stats,
                    "portfolio write",
                    client.post(
                        f"/api/v1/portfolio/{portfolio}/transactions",
                        json={
                            "type": "buy",
                            "date": "2021-06-01",
                            "ticker": ticker,
                            "quantity": "1",
                            "price": "100",
                        },
                    ),
                )


async def follower(base: str, n: int, deadline: float, stats: Stats) -> None:
    """A WebSocket client on quotes or forecasts, reading until the deadline."""
    email = f"socket-{n}-{os.getpid()}@example.com"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "display_name": f"Socket {n}"},
        )
        login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        token = login.json()["access_token"]
    stream = "predictions" if n % 4 == 0 else "real-time"
    url = base.replace("http://", "ws://") + f"/ws/{stream}?token={token}"
    subscribe: dict[str, object] = {"action": "subscribe", "tickers": TICKERS[:5]}
    if stream == "predictions":
        subscribe["model"] = "lstm"
    async with connect(url) as ws:
        await ws.send(json.dumps(subscribe))
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=left))
            except TimeoutError:
                break
            stats.socket_messages[message["type"]] += 1


async def wait_ready(base: str, child: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        for _ in range(600):
            if child.poll() is not None:
                raise RuntimeError("the server exited during start-up")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("the server did not become ready")


def rss(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def run(args: argparse.Namespace, base: str, pid: int) -> None:
    stats = Stats()
    warm = Stats()
    warm_deadline = time.monotonic() + WARM_UP_S
    await asyncio.gather(*(user(base, 1000 + n, warm_deadline, warm) for n in range(args.users)))
    rss_start = rss(pid)
    started = time.monotonic()
    deadline = started + args.seconds
    samples: list[tuple[float, float]] = []

    async def sample_memory() -> None:
        while time.monotonic() < deadline:
            samples.append((time.monotonic() - started, rss(pid)))
            await asyncio.sleep(min(30.0, args.seconds / 10))

    await asyncio.gather(
        sample_memory(),
        *(user(base, n, deadline, stats) for n in range(args.users)),
        *(follower(base, n, deadline, stats) for n in range(args.sockets)),
    )
    elapsed = time.monotonic() - started
    rss_end = rss(pid)
    total = sum(len(v) for v in stats.latency.values())
    print(f"\n{args.users} users, {args.sockets} sockets, {elapsed:.0f} s (after warm-up)")
    print(f"sustained: {total / elapsed:.1f} requests/s ({total} requests)")
    print(f"{'kind':<22}{'n':>8}{'p50 ms':>10}{'p99 ms':>10}")
    for kind, values in sorted(stats.latency.items()):
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        p50 = statistics.median(values)
        print(f"{kind:<22}{len(values):>8}{p50 * 1000:>10.1f}{p99 * 1000:>10.1f}")
    print(f"5xx responses: {stats.server_errors}")
    print(f"other failures: {dict(stats.failures) or 'none'}")
    print(f"WebSocket messages received: {dict(stats.socket_messages)}")
    growth = (rss_end / rss_start - 1) * 100
    print(f"server RSS: {rss_start:.0f} MiB after warm-up -> {rss_end:.0f} MiB ({growth:+.1f} %)")
    print("RSS samples (s, MiB): " + ", ".join(f"({t:.0f}, {m:.0f})" for t, m in samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--sockets", type=int, default=20)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the child's port
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    from rich.console import Console

    from api.settings import Settings
    from pipelines.embedded import resolved_settings
    from pipelines.ingest import ingest_bundled
    from pipelines.up import ensure_champions

    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        base_settings = Settings(data_dir=Path(tmp), database_url=None, redis_url=None)
        with resolved_settings(base_settings) as settings:
            asyncio.run(ingest_bundled(settings.database_url or "", show_progress=False))
            ensure_champions(settings, Console(stderr=True))
            port = _free_port()
            env = {
                **os.environ,
                "DATABASE_URL": settings.database_url or "",
                "REDIS_URL": settings.redis_url or "",
                "STOCKCOPILOT_DATA_DIR": tmp,
                "FEED_MODE": "replay",
                "FEED_INTERVAL_S": "1",
                "RATE_LIMIT_DEFAULT_PER_MIN": str(10**9),
                "RATE_LIMIT_AUTH_PER_MIN": str(10**9),
                "LOG_LEVEL": "WARNING",
            }
            child = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.load", "--serve", str(port)], env=env
            )
            try:
                base = f"http://127.0.0.1:{port}"
                asyncio.run(wait_ready(base, child))
                asyncio.run(run(args, base, child.pid))
            finally:
                child.terminate()
                child.wait(timeout=30)


if __name__ == "__main__":
    main()
