"""The interactive docs need no CDN: every script, stylesheet and icon /docs and /redoc load is
served by the API itself, so the pages render offline."""

from __future__ import annotations

import re

import httpx

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']|url:\s*'([^']+)'""")


def _references(html: str) -> list[str]:
    return [a or b for a, b in ASSET.findall(html)]


async def test_swagger_ui_and_redoc_load_only_local_assets(client: httpx.AsyncClient) -> None:
    for page, needed in (
        ("/docs", {"swagger-ui-bundle.js": "javascript", "swagger-ui.css": "text/css"}),
        ("/redoc", {"redoc.standalone.js": "javascript"}),
    ):
        response = await client.get(page)
        assert response.status_code == 200, page
        html = response.text
        assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html, page
        references = _references(html)
        external = [r for r in references if r.startswith(("http://", "https://", "//"))]
        assert external == [], (page, external)
        for name, kind in needed.items():
            (url,) = [r for r in references if r.endswith(name)]
            asset = await client.get(url)
            assert asset.status_code == 200, url
            assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
            assert len(asset.content) > 10_000, url  # the real bundle, not a stub
            assert b"cdn.redoc.ly" not in asset.content, url  # ReDoc's footer logo: blanked
    redirect = await client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200 and "oauth2" in redirect.text.lower()
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200 and "/docs" not in spec.json()["paths"]
