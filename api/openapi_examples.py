"""Response examples in the OpenAPI schema, recorded from the real API on the bundled data.

`openapi_examples.json` maps "METHOD /path" to one real response body (lists cut to three items,
secrets replaced by placeholders). `attach(app)` puts each into the schema, where /docs shows
it; a test checks that every JSON operation has one and that it matches the response schema.
The recorder lives in `pipelines/openapi_examples.py` (it needs the models and the embedded
services, which the API layer never imports):

    uv run python -m pipelines.openapi_examples
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI

EXAMPLES_FILE = Path(__file__).with_name("openapi_examples.json")


def attach(app: FastAPI) -> None:
    """Serve the schema with the recorded examples in it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        examples = json.loads(EXAMPLES_FILE.read_text()) if EXAMPLES_FILE.exists() else {}
        for key, example in examples.items():
            method, path = key.split(" ", 1)
            operation = schema["paths"].get(path, {}).get(method.lower())
            for code, response in (operation or {}).get("responses", {}).items():
                content = response.get("content", {}).get("application/json")
                if code.startswith("2") and content is not None:
                    content["example"] = example
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
