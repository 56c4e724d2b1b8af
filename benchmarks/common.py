"""Small pieces both benchmarks use."""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx

from api.settings import Settings


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank `q` quantile of sorted, non-empty values."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def in_process_server_config(settings: Settings, port: int) -> Any:
    """The `--no-ray` server (API and models in one process, as `stockcopilot up --no-ray`),
    as uvicorn's config for loopback `port`."""
    import uvicorn

    from api.app import create_app
    from serving.local import LocalPredictor
    from training import registry

    predictor = LocalPredictor(registry.configure(settings.mlflow_tracking_uri))
    app = create_app(settings, predictor)
    return uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def _serve_in_process(settings: Settings, port: int) -> None:
    import uvicorn

    from api.logging import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    uvicorn.Server(in_process_server_config(settings, port)).run()


@contextlib.contextmanager
def in_process_server(settings: Settings) -> Iterator[tuple[str, int]]:
    """The in-process API in a process of its own (a client in the same process would share its
    interpreter lock and slow it down); yields its base URL and pid once it answers, and stops
    it afterwards."""
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve_in_process, args=(settings, port), daemon=True
    )
    process.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(f"{base}/healthz", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or not process.is_alive():
                process.kill()
                raise RuntimeError("the in-process server did not start") from None
            time.sleep(0.1)
    try:
        yield base, process.pid or 0
    finally:
        process.terminate()  # uvicorn shuts down on SIGTERM: the app's pools close
        process.join(timeout=30)
        if process.is_alive():
            process.kill()


async def stored_ids(http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> set[str]:
    """The ids of every item of a paged collection (`total`/`items`, as the transactions of a
    portfolio): what a soak compares its acknowledged writes with at the end."""
    ids: set[str] = set()
    while True:
        page = await _read_page(http, path, {"limit": 500, "offset": len(ids)}, headers)
        ids |= {item["id"] for item in page["items"]}
        if not page["items"] or len(ids) >= page["total"]:
            return ids


async def _read_page(
    http: httpx.AsyncClient, path: str, params: dict[str, int], headers: dict[str, str]
) -> dict[str, Any]:
    """One page, asked again for a while on a 5xx or no answer (a replica may be restarting):
    a read-back must not report writes as lost because one read failed."""
    for attempt in range(20):
        with contextlib.suppress(httpx.TransportError):
            response = await http.get(path, params=params, headers=headers)
            if response.status_code < 500:
                response.raise_for_status()
                return response.json()
        await asyncio.sleep(min(5.0, 0.5 * 2**attempt))
    raise RuntimeError(f"could not read {path} back")
