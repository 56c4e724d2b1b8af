"""The OpenAPI schema: auth flows for the Authorize button, every operation described and
protected, and real examples for every request body and JSON response."""

from __future__ import annotations

import httpx

from api.settings import Settings


async def test_openapi_offers_the_password_flow_and_api_keys_to_authorize(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "scoped API key",
    }
    me = schema["paths"]["/api/v1/users/me"]["get"]
    assert {"OAuth2PasswordBearer": []} in me["security"]


async def test_every_operation_is_described_and_every_domain_route_is_protected(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    open_routes = {"/healthz", "/readyz"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation.get("description"), f"{method.upper()} {path} has no description"
            protected = "security" in operation
            if path.startswith("/api/v1/") and not path.startswith("/api/v1/auth/"):
                assert protected, f"{method.upper()} {path} is open"
            elif path in open_routes:
                assert not protected, path


def test_every_request_body_has_an_example_that_its_schema_accepts() -> None:
    import jsonschema

    from api.app import create_app

    spec = create_app(Settings()).openapi()
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue  # form posts and file uploads document themselves
            ref = body["schema"]["$ref"]
            component = spec["components"]["schemas"][ref.split("/")[-1]]
            examples = component.get("examples")
            assert examples, f"{method.upper()} {path} has no request example"
            for example in examples:
                jsonschema.validate(
                    example,
                    {"$ref": ref, "components": spec["components"]},
                    cls=jsonschema.Draft202012Validator,
                )
            checked += 1
    assert checked >= 15


# Operations without a recorded response example: no body (202), or a flow the recorder cannot
# drive without an outside party (the OAuth callback answers like /auth/login).
NO_RESPONSE_EXAMPLE = {
    "POST /api/v1/auth/verify-email/request",
    "POST /api/v1/auth/password-reset/request",
    "GET /api/v1/auth/oauth/{provider}/callback",
}


def test_every_json_response_has_a_recorded_example_matching_its_schema() -> None:
    import jsonschema

    from api.app import create_app

    spec = create_app(Settings()).openapi()
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            name = f"{method.upper()} {path}"
            for code, response in operation["responses"].items():
                content = response.get("content", {}).get("application/json")
                if not code.startswith("2") or content is None or name in NO_RESPONSE_EXAMPLE:
                    continue
                assert "example" in content, f"{name} has no response example"
                jsonschema.validate(
                    content["example"],
                    {**content["schema"], "components": spec["components"]},
                    cls=jsonschema.Draft202012Validator,
                )
                checked += 1
    assert checked >= 50
