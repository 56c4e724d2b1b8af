"""No route pays a thread hop for a dependency: FastAPI runs every plain `def` dependency (and
endpoint) in a worker thread, which cost a prediction request more than the model's forward
pass (benchmarks/profile_path.py). Ours are all `async def`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant

from api.app import create_app
from api.errors import api_routes
from api.settings import Settings

# FastAPI's own form parser for the OAuth2 password flow: a class, built in a thread, once per
# sign-in (not on any data route)
ALLOWED = {"fastapi.security.oauth2.OAuth2PasswordRequestForm"}


def _runs_on_the_loop(call: Callable[..., Any]) -> bool:
    return (
        inspect.iscoroutinefunction(call)
        or inspect.isasyncgenfunction(call)
        or inspect.iscoroutinefunction(type(call).__call__)  # an instance: OAuth2PasswordBearer
    )


def _name(call: Callable[..., Any]) -> str:
    return f"{call.__module__}.{getattr(call, '__qualname__', call)}"


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def test_every_endpoint_and_dependency_runs_on_the_event_loop(settings: Settings) -> None:
    app = create_app(settings)
    threaded = set()
    for route in api_routes(app):
        original = route.original_route
        calls = [original.endpoint, *_calls(original.dependant)]  # type: ignore[attr-defined]
        for depends in route.dependencies or []:  # the including routers' dependencies
            calls += [depends.dependency, *_calls(get_dependant(path="", call=depends.dependency))]
        threaded |= {_name(c) for c in calls if c is not None and not _runs_on_the_loop(c)}
    assert threaded <= ALLOWED, sorted(threaded - ALLOWED)
