"""Load and soak test: the product as users run it, under a mixed load, on loopback.

    uv run python -m benchmarks.load                  # the 10-minute soak, 20 users
    uv run python -m benchmarks.load --seconds 20     # a smoke run
    uv run python -m benchmarks.load --ray            # the whole Ray Serve stack, replicas killed


The server is `stockcopilot up --no-ray` in a child process (the same start-up as a user's:
embedded Postgres and Redis in a temporary folder, the bundled data ingested, the registered
champions under mlruns/ served in-process — trained once if there are none — and the market
feed replaying one trading day per second). Virtual users, each with an account and a
portfolio, run a closed loop over a weighted mix — logins, quotes, history, predictions served
from the cache and computed afresh, portfolio writes, the market overview — while WebSocket
clients stay subscribed to live quotes. After a warm-up, it measures for `--seconds`: sustained
requests per second, p50/p99 per kind, 5xx and errors per kind, and the server process's RSS at
the start and the end (target: growth ≤ 10 %, 0 5xx). It stops by itself, and exits non-zero
when a target is missed. Every portfolio write the server acknowledged (2xx) is read back at
the end and must be there.

`--ray` serves the whole Ray Serve stack instead (benchmarks.load_ray): `stockcopilot up` with
the ingress and the LSTM deployment pinned at two replicas; one LSTM replica and one ingress
replica are SIGKILLed mid-soak (at 1/3 and 2/3 of the measured time) and must be replaced by
Serve while the load goes on. Its report is a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from benchmarks.common import free_port, percentile, stored_ids
from benchmarks.load_ray import RaySoak, add_ray_arguments
from features.datasets import load_universe

PASSWORD = "correct horse battery staple"
TICKERS = [i.ticker for i in load_universe().instruments if i.asset_type == "equity"]
PAST_DAYS = [str(d.date()) for d in pd.bdate_range("2016-01-04", "2022-12-28")]
# the mix a frontend produces: mostly reads, some model calls, some writes, a few sign-ins
MIX = {
    "quote": 25,
    "history": 12,
    "overview": 8,
    "prediction_cached": 20,
    "prediction_uncached": 8,
    "portfolio_write": 10,
    "positions": 7,
    "login": 2,
}
RSS_TARGET = 0.10
START_TIMEOUT_S = 900  # a first run ingests, may train the quick champions and indexes windows


@dataclass
class User:
    email: str
    headers: dict[str, str]
    portfolio: str
    acked: set[str] = field(default_factory=set)  # ids of the writes answered with a 2xx


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    server_errors: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, status/exc)
    ws_messages: Counter[str] = field(default_factory=Counter)
    ws_disconnects: int = 0  # an open socket dropped
    ws_reconnects: int = 0  # opened again after a drop
    ws_resubscribes: int = 0  # `subscribed` answered again after a drop
    ws_connect_failures: int = 0  # an attempt to open one that failed
    # (monotonic time answered, kind, status or exception) of each 5xx and each unanswered request
    failures: list[tuple[float, str, str]] = field(default_factory=list)

    def record(self, kind: str, seconds: float, outcome: int | str) -> None:
        self.latencies[kind].append(seconds)
        if isinstance(outcome, int) and outcome >= 500:
            self.server_errors[kind] += 1
        if not (isinstance(outcome, int) and outcome < 400):
            self.errors[(kind, str(outcome))] += 1
        if not (isinstance(outcome, int) and outcome < 500):
            self.failures.append((time.monotonic(), kind, str(outcome)))


# ------------------------------------------------------------------------------ the server


def start_server(
    data_dir: Path, port: int, log_path: Path, command: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """`stockcopilot up --no-ray` (or `command`) with its own data folder, limits out of the way
    (every virtual user shares one address), and the feed at one trading day per second."""
    env = {
        **os.environ,
        "STOCKCOPILOT_DATA_DIR": str(data_dir),
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "RATE_LIMIT_DEFAULT_PER_MIN": str(10**9),
        "RATE_LIMIT_AUTH_PER_MIN": str(10**9),
        "ACCESS_TOKEN_TTL_S": "7200",
        "LOG_LEVEL": "WARNING",
        "LOG_JSON": "true",
    }
    env.pop("DATABASE_URL")  # unset: embedded servers
    env.pop("REDIS_URL")
    command = command or [
        sys.executable,
        "-c",
        "from pipelines.cli import main; main()",
        "up",
        "--no-ray",
        "--feed",
        "replay",
        "--feed-interval",
        "1",
        "--port",
        str(port),
    ]
    with log_path.open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


async def wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with {server.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(1)
    raise RuntimeError(f"the server was not ready within {START_TIMEOUT_S} s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a user stops it (the embedded servers stop with it)."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


# ------------------------------------------------------------------------------ the clients


async def sign_in(http: httpx.AsyncClient, index: int) -> User:
    email = f"load-{index}-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": PASSWORD, "display_name": f"Load {index}"}
    (await http.post("/api/v1/auth/register", json=body)).raise_for_status()
    login = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    login.raise_for_status()
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    made = await http.post("/api/v1/portfolio", json={"name": "Load"}, headers=headers)
    made.raise_for_status()
    portfolio = made.json()["id"]
    deposit = {"type": "deposit", "amount": "1000000", "date": "2016-01-04"}
    path = f"/api/v1/portfolio/{portfolio}/transactions"
    deposited = await http.post(path, json=deposit, headers=headers)
    deposited.raise_for_status()
    return User(email, headers, portfolio, {deposited.json()["id"]})


def request_for(kind: str, user: User, rng: random.Random) -> tuple[str, str, dict]:
    """(method, path, httpx options) of one request of `kind`."""
    ticker = rng.choice(TICKERS)
    auth = {"headers": user.headers}
    if kind == "quote":
        return "GET", f"/api/v1/stocks/{ticker}/quote", auth
    if kind == "history":  # the year up to the ticker's newest bar (GOOG's ends in 2013)
        return "GET", f"/api/v1/stocks/{ticker}/history", auth
    if kind == "overview":
        return "GET", "/api/v1/market/overview", auth
    if kind == "prediction_cached":  # a few popular tickers at the latest bar: cache hits
        params = {"horizon": 5, "model": "ensemble"}
        return "GET", f"/api/v1/predictions/{rng.choice(TICKERS[:4])}", {**auth, "params": params}
    if kind == "prediction_uncached":  # a random past as-of date: computed afresh
        params = {"horizon": 5, "model": "lstm", "as_of": rng.choice(PAST_DAYS)}
        return "GET", f"/api/v1/predictions/{ticker}", {**auth, "params": params}
    if kind == "portfolio_write":
        body = {
            "type": "buy",
            "ticker": ticker,
            "quantity": "1",
            "price": "100",
            "date": "2016-06-01",  # after the deposit, before any replayed day
        }
        headers = {**user.headers, "Idempotency-Key": uuid.uuid4().hex}
        return (
            "POST",
            f"/api/v1/portfolio/{user.portfolio}/transactions",
            {"json": body, "headers": headers},
        )
    if kind == "positions":
        return "GET", f"/api/v1/portfolio/{user.portfolio}/positions", auth
    if kind == "login":
        return "POST", "/api/v1/auth/login", {"json": {"email": user.email, "password": PASSWORD}}
    raise ValueError(kind)


async def user_loop(
    http: httpx.AsyncClient,
    user: User,
    seed: int,
    stats: Callable[[], Stats],
    stop: asyncio.Event,
    think_s: float,
) -> None:
    rng = random.Random(seed)
    kinds, weights = list(MIX), list(MIX.values())
    while not stop.is_set():
        kind = rng.choices(kinds, weights)[0]
        method, path, options = request_for(kind, user, rng)
        started = time.perf_counter()
        try:
            response = await http.request(method, path, **options)
            outcome: int | str = response.status_code
            if kind == "login" and response.status_code == 200:
                user.headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
            if kind == "portfolio_write" and response.is_success:
                user.acked.add(response.json()["id"])
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        stats().record(kind, time.perf_counter() - started, outcome)
        if think_s:
            await asyncio.sleep(think_s)


async def socket_client(
    ws_base: str,
    user: User,
    seed: int,
    stats: Callable[[], Stats],
    stop: asyncio.Event,
    subscribed: set[int],
) -> None:
    """Stays subscribed to five tickers' live quotes; on a drop it reconnects and subscribes
    again, counting each. `subscribed` holds the clients whose subscription is answered now."""
    tickers = random.Random(seed).sample(TICKERS, 5)
    token = user.headers["Authorization"].removeprefix("Bearer ")
    connections = 0
    while not stop.is_set():
        opened = False
        try:
            async with connect(f"{ws_base}/ws/real-time?token={token}") as ws:
                opened, connections = True, connections + 1
                if connections > 1:
                    stats().ws_reconnects += 1
                await ws.send(json.dumps({"action": "subscribe", "tickers": tickers}))
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        message = json.loads(await asyncio.wait_for(ws.recv(), timeout=1))
                        kind = message.get("type", "?")
                        stats().ws_messages[kind] += 1
                        if kind == "subscribed" and seed not in subscribed:
                            subscribed.add(seed)
                            stats().ws_resubscribes += connections > 1
        except (ConnectionClosed, WebSocketException, OSError):
            subscribed.discard(seed)
            if not stop.is_set():
                if opened:
                    stats().ws_disconnects += 1
                else:
                    stats().ws_connect_failures += 1
                await asyncio.sleep(0.5)


# ------------------------------------------------------------------------------ the run


@dataclass
class Result:
    stats: Stats
    seconds: float
    rss_start: float
    rss_end: float
    rss_peak: float
    rss_series: list[tuple[float, float]]
    acked: int = 0  # portfolio writes answered with a 2xx over the whole run
    lost: int = 0  # of those, the ones missing when the portfolios were read back
    subscribed: int = 0  # socket clients whose subscription was answered when measuring ended


type Chaos = Callable[[float, float], Coroutine[Any, Any, None]]
"""Runs beside the measurement, given its start (monotonic) and length; bounds its own time."""


async def run(
    args: argparse.Namespace, base: str, rss: Callable[[], float], chaos: Chaos | None = None
) -> Result:
    ws_base = base.replace("http://", "ws://")
    limits = httpx.Limits(max_connections=args.users + 8, max_keepalive_connections=args.users + 8)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        users = [await sign_in(http, i) for i in range(args.users)]
        current = [Stats()]
        stop = asyncio.Event()
        subscribed: set[int] = set()
        trouble: asyncio.Task[None] | None = None
        tasks = [
            asyncio.create_task(
                user_loop(http, u, i, lambda: current[0], stop, args.think_ms / 1000)
            )
            for i, u in enumerate(users)
        ] + [
            asyncio.create_task(
                socket_client(
                    ws_base, users[i % len(users)], i, lambda: current[0], stop, subscribed
                )
            )
            for i in range(args.sockets)
        ]
        try:
            await asyncio.sleep(args.warmup)  # models loaded, caches filled, pools grown
            current[0] = Stats()  # measure from here
            began = time.monotonic()
            trouble = asyncio.create_task(chaos(began, args.seconds)) if chaos else None
            series = await sample_rss(rss, began, args.seconds, args.rss_every)
            seconds = time.monotonic() - began
            measured, live = current[0], len(subscribed)
        finally:
            stop.set()
            await asyncio.wait(tasks, timeout=30)
            for task in tasks:
                task.cancel()
        if trouble:
            await trouble
        lost = await lost_writes(http, users)
    # RSS swings with each replayed day and model batch: compare the first and the last
    # quarter of the samples (medians), not two single readings
    quarter = max(1, len(series) // 4)
    start = statistics.median(r for _, r in series[:quarter])
    end = statistics.median(r for _, r in series[-quarter:])
    peak, acked = max(r for _, r in series), sum(len(u.acked) for u in users)
    return Result(measured, seconds, start, end, peak, series, acked, lost, live)


async def lost_writes(http: httpx.AsyncClient, users: list[User]) -> int:
    """Acknowledged writes missing from the portfolios as read back now."""
    lost = 0
    for user in users:
        path = f"/api/v1/portfolio/{user.portfolio}/transactions"
        lost += len(user.acked - await stored_ids(http, path, user.headers))
    return lost


async def sample_rss(
    rss: Callable[[], float], began: float, seconds: float, every: float
) -> list[tuple[float, float]]:
    """(seconds since `began`, MiB) every `every` seconds until `seconds` have passed."""
    series = [(0.0, rss())]
    while (elapsed := time.monotonic() - began) < seconds:
        await asyncio.sleep(min(every, seconds - elapsed))
        series.append((time.monotonic() - began, rss()))
    return series


def report(result: Result, args: argparse.Namespace) -> bool:
    stats = result.stats
    total = sum(len(v) for v in stats.latencies.values())
    print(
        f"\n{args.users} users, {args.sockets} WebSocket clients, {result.seconds:.0f} s measured "
        f"after {args.warmup:.0f} s of warm-up\n"
    )
    print(f"{'kind':22} {'n':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>9} {'5xx':>5} {'errors':>7}")
    for kind in MIX:
        times = sorted(stats.latencies.get(kind, []))
        if not times:
            continue
        errors = sum(n for (k, _), n in stats.errors.items() if k == kind)
        print(
            f"{kind:22} {len(times):>7} {len(times) / result.seconds:>8.1f} "
            f"{1000 * statistics.median(times):>8.1f} {1000 * percentile(times, 0.99):>9.1f} "
            f"{stats.server_errors[kind]:>5} {errors:>7}"
        )
    server_errors = sum(stats.server_errors.values())
    print(f"{'all':22} {total:>7} {total / result.seconds:>8.1f}   sustained req/s")
    if stats.errors:
        print("errors by kind:", dict(sorted(stats.errors.items())))
    print(
        f"WebSockets: {sum(stats.ws_messages.values())} messages "
        f"({dict(stats.ws_messages)}), {stats.ws_disconnects} disconnects, "
        f"{stats.ws_reconnects} reconnects, {stats.ws_resubscribes} resubscribes, "
        f"{result.subscribed}/{args.sockets} subscribed at the end"
    )
    print(f"portfolio writes acknowledged: {result.acked}, lost: {result.lost}")
    growth = result.rss_end / result.rss_start - 1
    print(
        f"server RSS (medians of the first and last quarter of the samples): "
        f"{result.rss_start:.0f} MiB after warm-up, {result.rss_end:.0f} MiB at the end "
        f"(peak {result.rss_peak:.0f}), growth {100 * growth:+.1f} % "
        f"(target ≤ {100 * RSS_TARGET:.0f} %)"
    )
    print("RSS samples (s, MiB):", ", ".join(f"{t:.0f}:{r:.0f}" for t, r in result.rss_series))
    ok = server_errors == 0 and growth <= RSS_TARGET and total > 0
    print(f"\n{'PASS' if ok else 'FAIL'}: {server_errors} 5xx, RSS growth {100 * growth:+.1f} %")
    return ok


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=600.0, help="measured duration")
    parser.add_argument("--users", type=int, default=20, help="virtual users (closed loop)")
    parser.add_argument("--sockets", type=int, default=None, help="WebSocket clients (users/2)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before measuring")
    parser.add_argument("--think-ms", type=float, default=0.0, help="pause between requests")
    parser.add_argument("--rss-every", type=float, default=5.0, help="RSS sample period (s)")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="keep data here (faster reruns)"
    )
    add_ray_arguments(parser)
    args = parser.parse_args()
    args.sockets = max(1, args.users // 2) if args.sockets is None else args.sockets
    args.warmup = min(30.0, max(5.0, args.seconds / 4)) if args.warmup is None else args.warmup
    if args.ray and args.replicas < 2:
        parser.error("--replicas: at least 2, so that the service outlives a kill")
    return args


def main() -> None:
    args = parse_args()
    soak = RaySoak(args.replicas, args.kill_window) if args.ray else None
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = Path(tmp) / "server.log"
        server = start_server(data_dir, port, log_path, soak.command(port) if soak else None)
        try:
            print(f"starting the server (log: {log_path}) ...", flush=True)
            asyncio.run(wait_ready(base, server))
            if soak:
                soak.attach(server.pid, log_path)
                result = asyncio.run(run(args, base, soak.rss_mib, soak.chaos))
            else:
                result = asyncio.run(run(args, base, lambda: rss_mib(server.pid)))
        except BaseException:
            print(log_path.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            if soak:
                soak.stop(server, stop_server)
            else:
                stop_server(server)
    ok = soak.report(result, args, list(MIX), RSS_TARGET) if soak else report(result, args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
