"""A scripted OpenAI-compatible chat endpoint on loopback, for the chat tests.

It serves `POST <prefix>/v1/chat/completions`, streamed (Server-Sent Events, like the real APIs)
or not, and answers each request with the next scripted `Reply`: text, tool calls, an HTTP error
or a hang (the client's timeout fires first). A `Reply` may also be a function of the request, so
a scripted "model" can quote back what a tool returned. Every request is recorded (path, headers,
JSON body) so a test can check exactly what the API sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = "call_1"


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `chunks` splits a streamed answer (default: word by word)."""

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    status: int = 200
    hang_s: float = 0.0
    chunks: tuple[str, ...] | None = None
    fail_after: int | None = None  # streamed: an error event instead of chunk `fail_after`
    usage: tuple[int, int] = (40, 10)  # prompt, completion tokens


type Script = Reply | Callable[[dict[str, Any]], Reply]


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", [])


@dataclass
class LocalLLMServer:
    """`with LocalLLMServer() as server:`; point an SDK at `server.base_url(...)`. Requests
    beyond the script get `fallback` (a 500 unless changed)."""

    fallback: Reply = field(default_factory=lambda: Reply(status=500))
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._script: deque[Script] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def base_url(self, prefix: str) -> str:
        """The SDK base URL: Together's SDK appends /v1/chat/completions, OpenAI's only
        /chat/completions (its base URL carries the /v1)."""
        return f"{self.url}/{prefix}"

    def script(self, *replies: Script) -> None:
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        """Forget the script and the log; let any hung request go."""
        with self._lock:
            self._script.clear()
            self.requests.clear()
        self._release.set()
        self._release = threading.Event()

    def _next(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            step = self._script.popleft() if self._script else self.fallback
        return step(recorded.body) if callable(step) else step

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                recorded = Recorded(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                if not self.path.endswith("/v1/chat/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                reply = outer._next(recorded)
                if reply.hang_s:
                    outer._release.wait(reply.hang_s)
                    return
                if reply.status != 200:  # SDKs honour retry-after-ms: retries stay quick
                    error = {"error": {"message": "scripted failure"}}
                    self._json(reply.status, error, {"retry-after-ms": "20"})
                    return
                if body.get("stream"):
                    self._stream(reply, body.get("model", ""))
                else:
                    self._json(200, completion(reply, body.get("model", "")))

            def _json(
                self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _stream(self, reply: Reply, model: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for i, chunk in enumerate(stream_chunks(reply, model)):
                    if reply.fail_after is not None and i >= reply.fail_after:
                        error = {"error": {"message": "scripted failure mid-stream"}}
                        self.wfile.write(f"data: {json.dumps(error)}\n\n".encode())
                        break
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(0.005)  # really separate network writes
                else:
                    self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        return Handler

    def __enter__(self) -> LocalLLMServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


def _tool_calls(reply: Reply) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        for i, call in enumerate(reply.tool_calls)
    ]


def _usage(reply: Reply) -> dict[str, int]:
    prompt, completion_tokens = reply.usage
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


def completion(reply: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = _tool_calls(reply)
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": _usage(reply),
    }


def stream_chunks(reply: Reply, model: str) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-local",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    pieces = list(reply.chunks or ())
    if not pieces and reply.content:
        words = reply.content.split(" ")
        pieces = [w + " " for w in words[:-1]] + [words[-1]]
    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"role": "assistant", "content": p}) for p in pieces]
    for call in _tool_calls(reply):  # name first, then the arguments in two parts
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        first = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        out.append(chunk({"role": "assistant", "tool_calls": [first]}))
        for part in (arguments[:half], arguments[half:]):
            delta = {"index": call["index"], "function": {"arguments": part}}
            out.append(chunk({"role": "assistant", "tool_calls": [delta]}))
    out.append(chunk({"role": "assistant"}, "tool_calls" if reply.tool_calls else "stop"))
    out.append({**chunk({"role": "assistant"}), "choices": [], "usage": _usage(reply)})
    return out
