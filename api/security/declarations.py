"""Rules every HTTP operation must follow, checked when the app is built, so a new route cannot
forget them: it declares exactly one access level (api.security.access), and its JSON body
refuses fields it does not know. The OpenAPI document states each operation's access as
`x-access` and lists only the credentials that can satisfy it.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, params
from fastapi.dependencies.models import Dependant
from pydantic import BaseModel, RootModel

from api.errors import api_routes
from api.security.access import Access

BEARER = "OAuth2PasswordBearer"
API_KEY = "APIKeyHeader"


class UndeclaredRoute(RuntimeError):
    """An operation breaks one of the rules above; the app refuses to start."""


def _accesses(dependant: Dependant) -> Iterator[Access]:
    for dependency in dependant.dependencies:
        access = getattr(dependency.call, "access", None)
        if isinstance(access, Access):
            yield access
        yield from _accesses(dependency)


def access_of(dependant: Dependant) -> Access | None:
    found = set(_accesses(dependant))
    return found.pop() if len(found) == 1 else None


def _models(annotation: Any, seen: set[type]) -> Iterator[type[BaseModel]]:
    """Every pydantic model an annotation can hold (unions, lists, Annotated, nested fields)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return
        seen.add(annotation)
        if not issubclass(annotation, RootModel):
            yield annotation
        for field in annotation.model_fields.values():
            yield from _models(field.annotation, seen)
        return
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _models(typing.get_args(annotation)[0], seen)
    elif origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _models(arg, seen)


def check_routes(app: FastAPI) -> None:
    """Raise UndeclaredRoute naming every operation that breaks the rules."""
    problems = []
    for route in api_routes(app):
        label = f"{','.join(sorted(route.methods or ()))} {route.path}"
        accesses = set(_accesses(route.dependant))
        if len(accesses) != 1:
            problems.append(f"{label} declares {len(accesses)} access levels, not one")
        body = getattr(route, "body_field", None)
        if body is not None and not isinstance(body.field_info, params.Form):  # JSON bodies
            for model in _models(body.field_info.annotation, set()):
                if model.model_config.get("extra") != "forbid":
                    problems.append(f"{label}: body model {model.__name__} accepts unknown fields")
    if problems:
        raise UndeclaredRoute("; ".join(sorted(set(problems))))


def document_access(app: FastAPI) -> None:
    """Add `x-access` and the satisfying credentials to every operation of the schema."""
    build = app.openapi
    documented: set[int] = set()  # the schema is built once and cached; document it once

    def openapi() -> dict[str, Any]:
        schema = build()
        if id(schema) in documented:
            return schema
        for route in api_routes(app):
            if not route.include_in_schema:
                continue
            access = access_of(route.dependant)
            assert access is not None  # check_routes ran when the app was built
            for method in route.methods or ():
                operation = schema["paths"][route.path_format][method.lower()]
                operation["x-access"] = access.describe(method)
                if access.level == "public":
                    operation.pop("security", None)
                elif access.level == "scope":
                    scope = access.scope_for(method)
                    operation["security"] = [{BEARER: []}, {API_KEY: [scope]}]
                else:
                    operation["security"] = [{BEARER: []}]
        documented.add(id(schema))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
