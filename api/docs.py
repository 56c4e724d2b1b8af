"""The interactive API docs, with no CDN: /docs (Swagger UI) and /redoc load their scripts and
styles from this server, so they render offline and behind firewalls.

The assets are the upstream Swagger UI and ReDoc builds that the `fastapi-offline` package
ships (MIT licence, in its distribution's `licenses/`), served from its installed folder: no
vendored copy to keep up to date here.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from api.deps import require
from api.middleware import DOCS_PATHS
from api.security.access import PUBLIC

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs/assets"
SWAGGER_URL, REDOC_URL, OAUTH2_REDIRECT_URL = DOCS_PATHS
# ReDoc's sidebar footer always loads its logo from Redocly's CDN; served without it, the page
# makes no request to another host (checked in a real browser: tests/api/test_docs_browser.py)
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
BLANK_IMAGE = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"


@cache
def _redoc_bundle() -> bytes:
    return (
        (ASSETS / "redoc.standalone.js")
        .read_bytes()
        .replace(REDOC_LOGO.encode(), BLANK_IMAGE.encode())
    )


def install_docs(app: FastAPI, openapi_url: str) -> None:
    """Serve Swagger UI and ReDoc for `openapi_url`, their assets from this server."""
    public = [require(PUBLIC)]

    @app.get(f"{ASSETS_URL}/redoc.standalone.js", include_in_schema=False, dependencies=public)
    async def redoc_bundle() -> Response:  # before the mount, which would answer it otherwise
        return Response(
            _redoc_bundle(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_URL}/{name}"

    @app.get(SWAGGER_URL, include_in_schema=False, dependencies=public)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
            swagger_js_url=asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"),
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False, dependencies=public)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False, dependencies=public)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=f"{request.scope.get('root_path', '')}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, "redoc.standalone.js"),
            redoc_favicon_url=asset(request, "favicon.png"),
            with_google_fonts=False,
        )
