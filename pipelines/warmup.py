"""Work `stockcopilot up` does after the API is ready, in the background.

A first start serves as soon as the classical champion is registered (it covers every ticker
and is the family that serves by default). What is left — the runner-up GARCH-type model as
the live A/B challenger, the similarity index, and the quick network models that challenge the
classical one — runs here, one task at a time, with its progress on the console and in the
`warmup_tasks` table, which `/readyz` reports on every replica. A stopped start leaves its
unfinished tasks to the next one: each task first checks what is already there.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog
from rich.console import Console

from api.db.warmup import WarmupRepository, WarmupState
from api.settings import Settings

log = structlog.get_logger(__name__)
type Report = Callable[[str], None]


class WarmupCancelled(Exception):
    """The start is stopping: a task gives up at its next progress report."""


@dataclass(frozen=True)
class WarmupTask:
    name: str
    run: Callable[[Report], None]


def plan_warmup(settings: Settings) -> list[WarmupTask]:
    """What this start still has to do, in the order it is done: the challenger first (the
    replay's live A/B test pairs forecasts from the moment it is registered), then the index
    similarity search needs, then the networks, which take longest."""
    from pipelines.first_run import (
        ensure_classical_challenger,
        ensure_network_models,
        ensure_similarity_index,
        missing_networks,
        needs_classical_challenger,
        similarity_index_built,
    )

    tasks: list[WarmupTask] = []
    if needs_classical_challenger(settings):
        tasks.append(
            WarmupTask("classical challenger", lambda r: ensure_classical_challenger(settings, r))
        )
    if not similarity_index_built(settings):
        tasks.append(WarmupTask("similarity index", lambda r: ensure_similarity_index(settings, r)))
    if families := missing_networks(settings):
        tasks.append(
            WarmupTask("network models", lambda r: ensure_network_models(settings, families, r))
        )
    return tasks


class Warmup:
    """Runs the planned tasks in a background thread; `stop` cancels at the next report."""

    def __init__(self, settings: Settings, tasks: list[WarmupTask], console: Console) -> None:
        self._database_url = settings.database_url or ""
        self._tasks = tasks
        self._console = console
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run_all, name="warmup", daemon=True)
        names = [t.name for t in tasks]
        self._write(lambda repo: repo.plan(names))

    def start(self) -> None:
        if self._tasks:
            names = ", ".join(t.name for t in self._tasks)
            self._console.print(f"warming up in the background: {names} (see /readyz)")
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel at the task's next progress report, waiting for it at most `timeout_s`: a
        task between reports (the index is built in one transaction) is abandoned, and the
        next start does it again."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run_all(self) -> None:
        for task in self._tasks:
            if self._stopping.is_set():
                return
            self._record(task.name, "running")
            try:
                task.run(self._reporter(task.name))
            except WarmupCancelled:
                self._record(task.name, "pending", "stopped; the next start resumes it")
                return
            except Exception as exc:  # one failed task must not stop the others
                log.exception("warmup_failed", task=task.name)
                self._console.print(f"[red]warm-up: {task.name} failed[/]: {exc}")
                self._record(task.name, "failed", f"{type(exc).__name__}: {exc}")
                continue
            self._record(task.name, "done")
            self._console.print(f"warm-up: {task.name} done")
        self._console.print("warm-up finished")

    def _reporter(self, name: str) -> Report:
        def report(detail: str) -> None:
            if self._stopping.is_set():
                raise WarmupCancelled
            self._console.print(f"[dim]warm-up[/] {detail}", soft_wrap=True)
            self._record(name, "running", detail)

        return report

    def _record(self, name: str, state: WarmupState, detail: str = "") -> None:
        self._write(lambda repo: repo.update(name, state, detail))

    def _write(self, action: Callable[[WarmupRepository], Awaitable[None]]) -> None:
        """One write to `warmup_tasks`, on a short connection of this thread's own."""

        async def write() -> None:
            conn = await asyncpg.connect(self._database_url)
            try:
                await action(WarmupRepository(conn))
            finally:
                await conn.close()

        asyncio.run(write())
