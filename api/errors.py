"""RFC 9457 problem+json errors with stable machine-readable codes."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import sentry_sdk
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger(__name__)


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
        # a refused request still tells the client where its rate budget stands
        response.headers.update(getattr(request.state, "rate_limit_headers", {}))
        response.headers.update(exc.headers)
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
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the cause server-side; never leak internals to the client.
        log.exception("unhandled_error", path=request.url.path)
        sentry_sdk.capture_exception(exc)  # a no-op unless SENTRY_DSN is set
        return problem(500, "internal_error", "unexpected server error", request.url.path)
