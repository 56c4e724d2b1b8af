"""An app served by a real uvicorn on a loopback port, for tests that need real sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
from fastapi import FastAPI


def free_port() -> int:
    """A loopback port no one listens on right now (for servers that need a fixed port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _loopback_server(app: FastAPI) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # as `stockcopilot up`: the app decides whom to believe
    )
    return uvicorn.Server(config)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Run `app` (with its lifespan) on 127.0.0.1 and a free port; yields `host:port`."""
    server = _loopback_server(app)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # startup failed: raise its error
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


@contextmanager
def serving_in_thread(app: FastAPI) -> Iterator[str]:
    """`serving` for synchronous callers (schemathesis, blocking clients): uvicorn runs in a
    thread with its own event loop, so a test that blocks cannot stall the server."""
    server = _loopback_server(app)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
