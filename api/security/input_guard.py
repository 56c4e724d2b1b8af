"""Hostile input stops at the edge, before any route, parser or database sees it.

A pure-ASGI middleware, so it applies to every HTTP operation, those added later included:

- a body larger than its limit gets 413 unread (`max_body_bytes`; CSV imports get
  `max_upload_bytes`), whether or not it announced its length;
- JSON bodies must be finite and sane: no `NaN`/`Infinity`, no number that overflows a float or
  has more digits than any amount here, at most `MAX_DEPTH` levels deep;
- no text anywhere (JSON strings and keys, query parameters, form fields, the path) may hold NUL,
  another C0 or C1 control character (tab, line feed and carriage return are allowed), a lone
  surrogate, or a bidirectional embedding, override or isolate control (U+202A–U+202E,
  U+2066–U+2069), which can make text display as something it is not.

Refusals are the API's usual 422 problem (`validation_error`, the offending field in `errors`)
or a 413 (`body_too_large`). Databases reject NUL outright and truncated or reversed names are a
phishing aid, so refusing is kinder than storing a surprise.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 40  # digits (and sign, point, exponent) of one JSON number
# C0 controls but tab, LF and CR; DEL and the C1 controls; lone surrogates; bidi controls
FORBIDDEN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]"
)
_NAMES = {
    "\x00": "NUL",
    "\u202e": "a right-to-left override",
    "\u202d": "a left-to-right override",
}


class Refused(ValueError):
    def __init__(self, loc: list[str], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def text_problem(text: str) -> str | None:
    """Why `text` is refused, or None."""
    found = FORBIDDEN.search(text)
    if found is None:
        return None
    char = found.group()
    name = _NAMES.get(char, f"U+{ord(char):04X}")
    return f"text must not contain control characters ({name} at position {found.start()})"


def _number(raw: str) -> float | int:
    if len(raw) > MAX_NUMBER_CHARS:
        raise Refused([], f"number with {len(raw)} characters is out of range")
    value = float(raw) if any(c in raw for c in ".eE") else int(raw)
    if isinstance(value, float) and not math.isfinite(value):
        raise Refused([], f"number {raw[:20]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise Refused([], f"{name} is not a number this API accepts")


def parse_json(body: bytes) -> Any:
    """The JSON document, refusing non-finite and oversized numbers. ValueError (not Refused)
    when it is not JSON at all: the app answers that with its own 400."""
    try:
        return json.loads(
            body,
            parse_float=_number,
            parse_int=_number,
            parse_constant=_constant,
        )
    except RecursionError as exc:
        raise Refused([], f"JSON nested deeper than {MAX_DEPTH} levels") from exc


def hostile_value(value: Any, loc: list[str], depth: int = 0) -> Refused | None:
    """The first refused thing inside a parsed JSON value, with where it is."""
    if depth > MAX_DEPTH:
        return Refused(loc, f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        problem = text_problem(value)
        return Refused(loc, problem) if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = text_problem(key)
            if problem:
                return Refused(loc, f"field name: {problem}")
            found = hostile_value(item, [*loc, key], depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = hostile_value(item, [*loc, str(index)], depth + 1)
            if found:
                return found
    return None


def hostile_pairs(pairs: Iterator[tuple[str, str]], where: str) -> Refused | None:
    for key, value in pairs:
        problem = text_problem(key) or text_problem(value)
        if problem:
            return Refused([where, key], problem)
    return None


def _problem(status: int, code: str, detail: str, path: str, **extra: Any) -> bytes:
    return json.dumps(
        {
            "type": f"/problems/{code}",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
            "code": code,
            "instance": path,
            **extra,
        }
    ).encode()


class InputGuardMiddleware:
    """See the module docstring. `upload(path)` says whether a path takes file uploads."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_upload_bytes: int,
        upload: Callable[[str], bool],
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes
        self.upload = upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        refused = self._url_problem(scope)
        if refused is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": refused.message})
                return
            await self._refuse(send, path, refused)
            return
        if scope["type"] == "websocket" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.max_upload if self.upload(path) else self.max_body
        headers = dict(scope.get("headers") or [])
        announced = headers.get(b"content-length", b"")
        if announced.isdigit() and int(announced) > limit:
            await self._too_large(send, path, limit)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._too_large(send, path, limit)
                return
        refused = self._body_problem(headers.get(b"content-type", b""), body)
        if refused is not None:
            await self._refuse(send, path, refused)
            return
        await self.app(scope, _replay(body, receive), send)

    def _url_problem(self, scope: Scope) -> Refused | None:
        problem = text_problem(scope["path"])
        if problem:
            return Refused(["path"], problem)
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            return Refused(["query"], "the query string is not UTF-8")
        return hostile_pairs(iter(pairs), "query")

    def _body_problem(self, content_type: bytes, body: bytes) -> Refused | None:
        kind = content_type.split(b";")[0].strip().lower()
        if not body:
            return None
        if kind == b"application/json" or kind.endswith(b"+json"):
            try:
                document = parse_json(body)
            except Refused as exc:
                return Refused(["body", *exc.loc], exc.message)
            except ValueError:  # not JSON: the app's own 400
                return None
            return hostile_value(document, ["body"])
        if kind == b"application/x-www-form-urlencoded":
            try:
                pairs = parse_qsl(body.decode(), keep_blank_values=True, errors="strict")
            except UnicodeDecodeError:
                return Refused(["body"], "the form is not UTF-8")
            return hostile_pairs(iter(pairs), "body")
        return None  # files (multipart) are checked by their own parsers, with line numbers

    async def _refuse(self, send: Send, path: str, refused: Refused) -> None:
        where = ".".join(refused.loc[1:] or refused.loc)
        errors = [{"loc": refused.loc, "message": refused.message}]
        body = _problem(422, "validation_error", f"{where}: {refused.message}", path, errors=errors)
        await _respond(send, 422, body)

    async def _too_large(self, send: Send, path: str, limit: int) -> None:
        detail = f"request body larger than {limit} bytes"
        await _respond(send, 413, _problem(413, "body_too_large", detail, path))


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body once, then whatever the client sends next (its disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
