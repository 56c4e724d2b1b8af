"""The Ray half of the load and soak test (`python -m benchmarks.load --ray`).

The server is `stockcopilot up` with Ray in a child process, started through this module's
`__main__`: the same CLI command and start-up, except that the ingress and the LSTM deployment
(the family the uncached predictions ask for) are pinned at `--replicas` (2) replicas, so that
killing one leaves one serving and an autoscaler step cannot pass for a leak in the RSS
comparison. `stockcopilot up` has no scaling option, so the child substitutes a ServeAppConfig
whose defaults say so before pipelines.up is imported; everything else runs unchanged.

Mid-soak one LSTM replica (at 1/3 of the measured time) and one ingress replica (at 2/3) are
SIGKILLed, as a crash would end them. Each is found through Ray's state API on the child's own
cluster (its address read from a process of the child's tree, so other clusters on the machine
do not matter), and only a pid inside the child's process tree is ever signalled. Serve must
bring a replacement up; a 503 answered within `--kill-window` seconds of a kill is the documented
answer while it does, any other 5xx fails the run. The RSS measured is the sum over the whole
tree: the driver, Ray's own processes, every worker and HAProxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from benchmarks.common import percentile

if TYPE_CHECKING:
    from benchmarks.load import Result, Stats
    from serving.config import ServeAppConfig

APP = "stockcopilot"  # the application name pipelines.up gives serve.run
KILLED_FAMILY = "lstm"
TOPOLOGY_TIMEOUT_S = 600  # replicas importing torch on a busy machine
KILL_WAIT_S = 60  # for the victim's deployment to be at full strength before a kill
REPLACE_GRACE_S = 120  # after the measurement, for a replacement still starting


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray", action="store_true", help="the Ray Serve stack, replicas killed mid-soak"
    )
    parser.add_argument(
        "--replicas", type=int, default=2, help="--ray: ingress and LSTM replicas (≥ 2)"
    )
    parser.add_argument(
        "--kill-window",
        type=float,
        default=10.0,
        help="--ray: seconds after a kill in which a 503 is the documented answer",
    )


@dataclass
class Kill:
    deployment: str
    at: float = 0.0  # monotonic
    offset: float = 0.0  # seconds into the measurement
    pid: int = 0  # 0: not killed (see note)
    before: set[str] = field(default_factory=set)  # the deployment's actor ids at the kill
    replaced_after: float | None = None  # seconds until a new replica was alive
    note: str = ""

    def summary(self) -> tuple[str, str, bool]:
        """(value, target, met) for the report."""
        if not self.pid:
            return self.note, "replaced", False
        after = "never" if self.replaced_after is None else f"{self.replaced_after:.0f} s"
        return (
            f"pid {self.pid} at +{self.offset:.0f} s, a replacement alive after {after}",
            "replaced",
            self.replaced_after is not None,
        )


class RaySoak:
    """The Ray-mode server: how to start it, where its cluster is, what it weighs, and the
    kills it takes."""

    def __init__(self, replicas: int, kill_window: float) -> None:
        self.replicas = replicas
        self.kill_window = kill_window
        self.kills: list[Kill] = []
        self.topology_start: Counter[str] = Counter()
        self.topology_end: Counter[str] = Counter()
        self._server_pid = 0
        self._address = ""

    def command(self, port: int) -> list[str]:
        """The child: this module's `__main__` (serve_pinned)."""
        options = ["--port", str(port), "--replicas", str(self.replicas)]
        return [sys.executable, "-m", __name__, *options]

    @property
    def pinned(self) -> tuple[str, str]:
        """The deployments killed: a model family's and the ingress."""
        from serving.ingress import StockCopilotIngress
        from serving.replicas import deployment_name

        return deployment_name(KILLED_FAMILY), StockCopilotIngress.name  # type: ignore[attr-defined]

    def attach(self, server_pid: int, log_path: Path) -> None:
        """Find the child's cluster and wait until both pinned deployments are at strength."""
        self._server_pid = server_pid
        self._address = cluster_address(server_pid, log_path)
        deadline = time.monotonic() + TOPOLOGY_TIMEOUT_S
        while any(len(self.alive(d)) < self.replicas for d in self.pinned):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not {self.replicas} replicas of {self.pinned}: {self.topology()}"
                )
            time.sleep(1)
        self.topology_start = self.topology()
        print(f"Ray cluster at {self._address}; replicas: {dict(self.topology_start)}", flush=True)

    def alive(self, deployment: str) -> list[Any]:
        """The live replica actors of one deployment (Ray's state API)."""
        from ray.util.state import list_actors

        filters: list[tuple[str, Any, Any]] = [
            ("class_name", "=", f"ServeReplica:{APP}:{deployment}"),
            ("state", "=", "ALIVE"),
        ]
        return list_actors(address=self._address, filters=filters, raise_on_missing_output=False)

    def topology(self) -> Counter[str]:
        """Live replicas per deployment of the application."""
        from ray.util.state import list_actors

        prefix = f"ServeReplica:{APP}:"
        actors = list_actors(
            address=self._address,
            filters=[("state", "=", "ALIVE")],
            limit=10_000,
            raise_on_missing_output=False,
        )
        return Counter(
            a.class_name.removeprefix(prefix) for a in actors if a.class_name.startswith(prefix)
        )

    def tree(self) -> list[psutil.Process]:
        """The child and every process below it (Ray's workers are the raylet's children)."""
        root = psutil.Process(self._server_pid)
        return [root, *root.children(recursive=True)]

    def rss_mib(self) -> float:
        total = 0
        for process in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += process.memory_info().rss
        return total / 2**20

    def stop(self, server: subprocess.Popen[bytes], stop_server: Callable[[Any], None]) -> None:
        """`stop_server`, then SIGKILL whatever of the child's tree outlived it (psutil checks
        each pid still names the process it saw)."""
        survivors: list[psutil.Process] = []
        with contextlib.suppress(psutil.NoSuchProcess):
            survivors = self.tree()[1:]
        stop_server(server)
        for process in survivors:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    async def chaos(self, began: float, seconds: float) -> None:
        """One model replica killed at 1/3 of the measurement, one ingress replica at 2/3; then
        wait (bounded) for Serve to replace them."""
        watches = []
        for fraction, deployment in zip((1 / 3, 2 / 3), self.pinned, strict=True):
            await asyncio.sleep(max(0.0, began + fraction * seconds - time.monotonic()))
            kill = await self._kill_one(deployment, began)
            self.kills.append(kill)
            if kill.pid:
                deadline = began + seconds + REPLACE_GRACE_S
                watches.append(asyncio.create_task(self._watch(kill, deadline)))
        await asyncio.gather(*watches)
        self.topology_end = await asyncio.to_thread(self.topology)

    async def _kill_one(self, deployment: str, began: float) -> Kill:
        deadline = time.monotonic() + KILL_WAIT_S
        while len(victims := await asyncio.to_thread(self.alive, deployment)) < self.replicas:
            if time.monotonic() > deadline:
                return Kill(deployment, note=f"not killed: {len(victims)} replica(s) alive")
            await asyncio.sleep(1)
        victim = victims[0]
        if victim.pid not in {p.pid for p in self.tree()}:
            return Kill(deployment, note=f"not killed: pid {victim.pid} is not the child's")
        os.kill(victim.pid, signal.SIGKILL)
        at = time.monotonic()
        before = {a.actor_id for a in victims}
        return Kill(deployment, at, at - began, victim.pid, before)

    async def _watch(self, kill: Kill, deadline: float) -> None:
        """Until a replica the deployment did not have at the kill is alive, at full strength."""
        while time.monotonic() < deadline:
            alive = await asyncio.to_thread(self.alive, kill.deployment)
            if len(alive) >= self.replicas and {a.actor_id for a in alive} - kill.before:
                kill.replaced_after = time.monotonic() - kill.at
                return
            await asyncio.sleep(1)
        kill.note = "not replaced in time"

    def in_window(self, at: float) -> Kill | None:
        return next((k for k in self.kills if k.pid and 0 <= at - k.at <= self.kill_window), None)

    def report(
        self, result: Result, args: argparse.Namespace, kinds: list[str], rss_target: float
    ) -> bool:
        """The markdown tables; True when every target is met."""
        print(
            f"\n### Ray Serve soak: {args.users} users, {args.sockets} WebSocket clients, "
            f"{result.seconds:.0f} s measured after {args.warmup:.0f} s of warm-up, "
            f"{self.replicas} ingress and {self.replicas} {KILLED_FAMILY} replicas\n"
        )
        self._kinds_table(result, kinds)
        checks = self._summary_table(result, args, rss_target)
        self._failure_lines(result.stats)
        ok = all(checks)
        print(f"\n**{'PASS' if ok else 'FAIL'}**")
        return ok

    def _kinds_table(self, result: Result, kinds: list[str]) -> None:
        stats = result.stats
        documented = Counter(k for at, k, o in stats.failures if o == "503" and self.in_window(at))
        unanswered = Counter(k for _, k, o in stats.failures if not o.isdigit())
        print("| kind | n | req/s | p50 ms | p99 ms | 5xx | 503 in a kill window | no answer |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|")
        for kind in [k for k in kinds if stats.latencies.get(k)]:
            times = sorted(stats.latencies[kind])
            p50, p99 = 1000 * statistics.median(times), 1000 * percentile(times, 0.99)
            print(
                f"| {kind} | {len(times)} | {len(times) / result.seconds:.1f} | {p50:.0f} "
                f"| {p99:.0f} | {stats.server_errors[kind]} | {documented[kind]} "
                f"| {unanswered[kind]} |"
            )
        total = sum(len(v) for v in stats.latencies.values())
        errors = sum(stats.server_errors.values())
        print(
            f"| **all** | {total} | **{total / result.seconds:.1f}** | | | {errors} "
            f"| {documented.total()} | {unanswered.total()} |\n"
        )

    def _summary_table(
        self, result: Result, args: argparse.Namespace, rss_target: float
    ) -> list[bool]:
        """Prints one row per measure; returns whether each target was met."""
        stats, rows = result.stats, Rows()
        answered = [(at, o) for at, _, o in stats.failures if o.isdigit()]
        beyond = sum(1 for at, o in answered if not (o == "503" and self.in_window(at)))
        unanswered = [at for at, _, o in stats.failures if not o.isdigit()]
        near = sum(1 for at in unanswered if self.in_window(at))
        growth = result.rss_end / result.rss_start - 1
        total = sum(len(v) for v in stats.latencies.values())
        rows.add("requests", total, "> 0", total > 0)
        rows.add("5xx beyond 503s in kill windows", beyond, "0", beyond == 0)
        rows.add("503s in kill windows (documented)", len(answered) - beyond)
        rows.add("no answer, in kill windows / elsewhere", f"{near} / {len(unanswered) - near}")
        ws = f"{stats.ws_disconnects} / {stats.ws_reconnects} / {stats.ws_resubscribes}"
        rows.add("WebSocket disconnects / reconnects / resubscribes", ws)
        live = result.subscribed == args.sockets
        rows.add("WebSocket clients subscribed at the end", result.subscribed, args.sockets, live)
        messages = f"{sum(stats.ws_messages.values())} / {stats.ws_connect_failures}"
        rows.add("WebSocket messages / failed connection attempts", messages)
        lost = f"{result.lost} of {result.acked}"
        rows.add("acknowledged portfolio writes lost", lost, "0", result.lost == 0)
        rss = f"{result.rss_start:.0f} → {result.rss_end:.0f} MiB (peak {result.rss_peak:.0f})"
        rows.add("RSS of the process tree, start → end", rss)
        target = f"≤ {100 * rss_target:.0f} %"
        rows.add("RSS growth", f"{100 * growth:+.1f} %", target, growth <= rss_target)
        for kill in self.kills:
            rows.add(f"kill one {kill.deployment} replica", *kill.summary())
        done = sum(1 for k in self.kills if k.pid)
        rows.add("replicas killed", done, len(self.pinned), done == len(self.pinned))
        rows.add(
            "replicas at start → end", f"{dict(self.topology_start)} → {dict(self.topology_end)}"
        )
        rows.print()
        return rows.met

    def _failure_lines(self, stats: Stats, limit: int = 30) -> None:
        """Each 5xx and unanswered request, placed after the latest kill before it."""
        if stats.failures:
            print(f"\nfailures (the first {limit}):")
        for at, kind, outcome in stats.failures[:limit]:
            before = [k for k in self.kills if k.pid and k.at <= at]
            where = (
                f"+{at - before[-1].at:.1f} s after the {before[-1].deployment} kill"
                if before
                else "before the kills"
            )
            print(f"- {kind} {outcome}, {where}")


class Rows:
    """The rows of the summary table, and the targets among them."""

    def __init__(self) -> None:
        self.lines = ["| measure | value | target | met |", "|---|---|---|---|"]
        self.met: list[bool] = []

    def add(self, name: str, value: object, target: object = "—", met: bool | None = None) -> None:
        mark = "" if met is None else ("yes" if met else "**no**")
        self.lines.append(f"| {name} | {value} | {target} | {mark} |")
        if met is not None:
            self.met.append(met)

    def print(self) -> None:
        print("\n".join(self.lines))


def cluster_address(server_pid: int, log_path: Path) -> str:
    """The child's own cluster: the GCS address on the command line of a Ray process in its
    tree (right even with other clusters on the machine), else the dashboard URL it printed.
    This process then authenticates as that cluster's processes do: Ray turns token
    authentication on for a new local cluster, so its RAY_AUTH_* settings are copied here."""
    for process in psutil.Process(server_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            address = next(
                (a.split("=", 1)[1] for a in process.cmdline() if a.startswith("--gcs-address=")),
                None,
            )
            if address:
                auth = {k: v for k, v in process.environ().items() if k.startswith("RAY_AUTH")}
                os.environ.update(auth)  # before this process configures Ray
                return address
    found = re.search(r"Ray dashboard: (http://\S+)", log_path.read_text(errors="replace"))
    if found:
        return found.group(1)
    raise RuntimeError("found no Ray cluster in the server's process tree or its output")


def pinned_config(base: type[ServeAppConfig], replicas: int) -> type[ServeAppConfig]:
    """ServeAppConfig with the ingress and the killed family at exactly `replicas` replicas;
    every other default as the product ships it."""
    from pydantic import Field

    from serving.config import Scaling

    fields = base.model_fields

    def pin(name: str) -> Scaling:
        shipped = fields[name].get_default(call_default_factory=True)
        return shipped.model_copy(update={"min_replicas": replicas, "max_replicas": replicas})

    ingress, model = pin("ingress"), pin("model")

    class PinnedServeAppConfig(base):  # type: ignore[misc, valid-type]
        ingress: Scaling = Field(default_factory=lambda: ingress.model_copy())
        overrides: dict[str, Scaling] = Field(
            default_factory=lambda: {KILLED_FAMILY: model.model_copy()}
        )

    return PinnedServeAppConfig


def serve_pinned(port: int, replicas: int) -> None:
    """The child: `stockcopilot up --feed replay --feed-interval 1 --port PORT`, with the pinned
    ServeAppConfig in place before anything imports it."""
    import serving.config

    serving.config.ServeAppConfig = pinned_config(serving.config.ServeAppConfig, replicas)  # type: ignore[misc]
    from pipelines.cli import main

    sys.argv = [
        "stockcopilot",
        "up",
        "--feed",
        "replay",
        "--feed-interval",
        "1",
        "--port",
        str(port),
    ]
    main()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=serve_pinned.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replicas", type=int, default=2)
    options = parser.parse_args()
    serve_pinned(options.port, options.replicas)
