"""RFC 9457 problem+json errors with stable machine-readable codes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any, TypeVar

import asyncpg
import sentry_sdk
import structlog
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from api.db.pool import DatabaseUnavailable

PROBLEM_JSON = "application/problem+json"
DATABASE_RETRY_AFTER_S = 2
log = structlog.get_logger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error response."""

    type: str = Field(examples=["/problems/ticker_not_found"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str = Field(description="what went wrong and what to fix", examples=["no ZZZZ"])
    code: str = Field(description="stable machine-readable code", examples=["ticker_not_found"])
    instance: str = Field(examples=["/api/v1/stocks/ZZZZ"])

    model_config = ConfigDict(extra="allow")  # extension members, e.g. `errors` of a 422


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: the problem+json answers it gives besides the usual ones
    (authentication, scope, rate limit and validation problems are documented automatically)."""
    return {status: _problem_response(status) for status in statuses}


def answers(*statuses: int) -> Callable[[F], F]:
    """Mark a dependency with the problem statuses it answers with, so every route using it
    documents them."""

    def mark(dependency: F) -> F:
        dependency.problem_statuses = statuses  # type: ignore[attr-defined]
        return dependency

    return mark


def _problem_response(status: int) -> dict[str, Any]:
    return {
        "description": HTTPStatus(status).phrase,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


class ProblemError(Exception):
    """Raise anywhere below a route; becomes a problem+json response."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


class NotFound(ProblemError):
    def __init__(self, what: str, detail: str) -> None:
        super().__init__(404, f"{what}_not_found", detail)


class Unprocessable(ProblemError):
    def __init__(self, code: str, detail: str, **extensions: Any) -> None:
        super().__init__(422, code, detail, **extensions)


def problem(status: int, code: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"/problems/{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": instance,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in err.get("loc", ())], "message": err.get("msg", "invalid")}
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        response = problem(exc.status, exc.code, exc.detail, request.url.path, **exc.extensions)
        response.headers.update(exc.headers)  # the rate budget is added by api.middleware
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        first = errors[0] if errors else {"loc": [], "message": "invalid request"}
        where = ".".join(first["loc"][1:] or first["loc"])
        detail = f"{where}: {first['message']}" if where else first["message"]
        return problem(422, "validation_error", detail, request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        response = problem(exc.status_code, code, str(exc.detail), request.url.path)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        if exc.status_code == 405:
            response.headers["Allow"] = _allowed_methods(request)
        return response

    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # retryable: the client is told so, and it is no bug to report
        log.warning("database_unavailable", path=request.url.path, error=type(exc).__name__)
        response = problem(
            503,
            "database_unavailable",
            "the database is unavailable; retry shortly",
            request.url.path,
        )
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
        return response

    for away in _DATABASE_AWAY:
        app.add_exception_handler(away, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if _database_away(exc):  # e.g. a failed rollback on the connection that was lost
            return await _database_unavailable(request, exc)
        # Log the cause server-side; never leak internals to the client.
        log.exception("unhandled_error", path=request.url.path)
        sentry_sdk.capture_exception(exc)  # a no-op unless SENTRY_DSN is set
        return problem(500, "internal_error", "unexpected server error", request.url.path)

    _document_problems(app)


_DATABASE_AWAY = (
    DatabaseUnavailable,  # could not connect
    asyncpg.PostgresConnectionError,  # the connection was lost mid-request
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, crashed
)


def _database_away(exc: BaseException | None) -> bool:
    """Whether `exc` (or what it was raised from, e.g. a rollback on a dead connection)
    means Postgres is out of reach rather than a bug."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, _DATABASE_AWAY):
            return True
        if isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _allowed_methods(request: Request) -> str:
    """The methods of the resource the path names. Starlette's own 405 lists only the first
    route matching the path, while a resource here is often served by several routes (GET and
    PATCH apart). As in OpenAPI, the most concrete template wins: `/predictions/batch` is a
    resource of its own, not an instance of `/predictions/{ticker}`."""
    path = request.url.path
    matching = [r for r in api_routes(request.app) if compile_path(r.path)[0].match(path)]
    if not matching:
        return ""
    best = max(_concreteness(r.path) for r in matching)
    methods = {m for r in matching if _concreteness(r.path) == best for m in r.methods or ()}
    return ", ".join(sorted(methods))  # HEAD is not served, so it is not offered


def _concreteness(template: str) -> tuple[bool, ...]:
    """Which segments are literal, left to right: compared, the more concrete template wins."""
    return tuple(not part.startswith("{") for part in template.split("/"))


def api_routes(app: FastAPI) -> Iterator[RouteContext]:
    """The app's HTTP operations, with the prefixes and dependencies of the routers they are
    included through."""
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute):
            yield route


def _answered_by_handlers(response: dict[str, Any]) -> bool:
    """An error response whose body the handlers above make: declared without content (a
    description only) or FastAPI's default validation error."""
    content = response.get("content")
    if not content:
        return True
    ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    return ref.endswith("/HTTPValidationError")


def _dependency_statuses(dependant: Dependant) -> Iterator[int]:
    for dependency in dependant.dependencies:
        yield from getattr(dependency.call, "problem_statuses", ())
        yield from _dependency_statuses(dependency)


def _document_problems(app: FastAPI) -> None:
    """Make the schema say what the handlers above answer: problem+json for every error, with
    the statuses each route's dependencies (credentials, scopes, rate limits) can give, 404 for
    a path naming a resource that may not exist and 400 for a body that cannot be parsed.
    Statuses particular to a route are declared on it with `responses=problems(...)`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "Problem" in components:
            return schema  # documented already
        components["Problem"] = Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for route in api_routes(app):
            if not route.include_in_schema:
                continue
            statuses = set(_dependency_statuses(route.dependant))
            if "{" in route.path:  # a path naming a resource (its own or a dependency's)
                statuses.add(404)
            for method in route.methods or ():
                operation = schema["paths"][route.path_format][method.lower()]
                responses = operation["responses"]
                # unparseable: 400; larger than the configured limit: 413 (api.security.input_guard)
                body = {400, 413} if "requestBody" in operation else set()
                for status in statuses | body:
                    responses.setdefault(str(status), _problem_response(status))
                for code, response in responses.items():
                    if code.isdigit() and int(code) >= 400 and _answered_by_handlers(response):
                        response["content"] = _problem_response(int(code))["content"]
                operation["responses"] = dict(sorted(responses.items()))
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
