"""Chat model providers: TogetherAI (the `together` SDK) first, OpenAI (the `openai` SDK) as backup.

Each call has a timeout and the SDK's bounded retries with backoff; a circuit breaker per provider
skips one that keeps failing. The chain is built once per app (`ProviderChain.from_settings` in
`create_app`), so circuit state persists across requests. A user's own stored key is used in
preference to the server key, with a short-lived client of its own.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import openai
import structlog
import together

from api.services.chat.breaker import CircuitBreaker
from api.settings import Settings

log = structlog.get_logger(__name__)

type Message = dict[str, Any]  # one message in the OpenAI chat format
type ToolSchema = dict[str, Any]


@dataclass(frozen=True)
class ToolCallRequest:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it

    def as_message_part(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class Completion:
    """A model's whole turn: text, or tool calls to run before it continues."""

    content: str
    tool_calls: list[ToolCallRequest]
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True)
class TextDelta:
    text: str


class ProviderError(Exception):
    """A provider call failed after the SDK's retries. `trips` says whether it counts against
    the provider's circuit (an outage does; a user's own rejected key does not)."""

    def __init__(self, provider: str, reason: str, trips: bool) -> None:
        super().__init__(f"{provider}: {reason}")
        self.provider = provider
        self.reason = reason
        self.trips = trips


class ChatProvider(Protocol):
    name: str
    user_key_name: str  # the user_secrets entry holding a user's own key for it

    def has_server_key(self) -> bool: ...

    async def complete(
        self, messages: list[Message], tools: list[ToolSchema], api_key: str | None
    ) -> Completion: ...

    def stream(
        self, messages: list[Message], tools: list[ToolSchema], api_key: str | None
    ) -> AsyncIterator[TextDelta | Completion]: ...

    async def aclose(self) -> None: ...


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class SdkProvider(ABC):
    """An OpenAI-compatible chat endpoint reached through a vendor SDK client. Subclasses say
    which SDK and which of its errors mean "this call failed"."""

    name: ClassVar[str]
    user_key_name: ClassVar[str]
    status_error: ClassVar[type[Exception]]  # the SDK's "the API answered with an error"
    stream_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, model: str, server_key: str | None, base_url: str | None, settings: Settings
    ) -> None:
        self._model = model
        self._server_key = server_key
        self._base_url = base_url
        self._timeout = settings.chat_timeout_s
        self._retries = settings.chat_max_retries
        self._shared: Any = None  # the server-key client, made on first use and kept

    def has_server_key(self) -> bool:
        return self._server_key is not None

    @abstractmethod
    def _new_client(self, api_key: str) -> Any:
        """A vendor SDK client for this key, with the timeout and retries configured."""

    @asynccontextmanager
    async def _client(self, api_key: str | None) -> AsyncIterator[Any]:
        if api_key is None or api_key == self._server_key:
            if self._shared is None:
                self._shared = self._new_client(self._server_key or "")
            yield self._shared
            return
        client = self._new_client(api_key)  # a user's key: its own client, closed after use
        try:
            yield client
        finally:
            await client.close()

    def _failure(self, exc: Exception, own_key: bool) -> ProviderError:
        status = getattr(exc, "status_code", None) if isinstance(exc, self.status_error) else None
        rejected = status is not None and 400 <= status < 500 and status not in (408, 429)
        reason = f"HTTP {status}" if status is not None else type(exc).__name__
        return ProviderError(self.name, reason, trips=not (rejected and own_key))

    def _request(self, messages: list[Message], tools: list[ToolSchema]) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self._model, "messages": messages}
        if tools:
            request["tools"] = tools
        return request

    async def complete(
        self, messages: list[Message], tools: list[ToolSchema], api_key: str | None
    ) -> Completion:
        async with self._client(api_key) as client:
            try:
                response = await client.chat.completions.create(**self._request(messages, tools))
                message = response.choices[0].message
            except Exception as exc:  # timeout, HTTP error, a malformed answer: all failures
                raise self._failure(exc, api_key is not None) from exc
        content = message.content or ""
        calls = [
            ToolCallRequest(c.id, c.function.name, c.function.arguments or "{}")
            for c in message.tool_calls or []
        ]
        usage = response.usage
        return Completion(
            content,
            calls,
            usage.prompt_tokens if usage else _estimate_tokens(json.dumps(messages)),
            usage.completion_tokens if usage else _estimate_tokens(content),
        )

    async def stream(
        self, messages: list[Message], tools: list[ToolSchema], api_key: str | None
    ) -> AsyncIterator[TextDelta | Completion]:
        request = {**self._request(messages, tools), "stream": True, **self.stream_options}
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage: Any = None
        async with self._client(api_key) as client:
            try:
                async for chunk in await client.chat.completions.create(**request):
                    usage = getattr(chunk, "usage", None) or usage
                    for choice in chunk.choices or []:
                        delta = choice.delta
                        if delta.content:
                            text.append(delta.content)
                            yield TextDelta(delta.content)
                        for part in delta.tool_calls or []:
                            _merge_tool_call(calls, part)
            except Exception as exc:  # timeout, HTTP error, a stream dropped mid-way: all failures
                raise self._failure(exc, api_key is not None) from exc
        content = "".join(text)
        yield Completion(
            content,
            [ToolCallRequest(c["id"], c["name"], c["arguments"] or "{}") for c in calls.values()],
            usage.prompt_tokens if usage else _estimate_tokens(json.dumps(messages)),
            usage.completion_tokens if usage else _estimate_tokens(content),
        )

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.close()
            self._shared = None


def _merge_tool_call(calls: dict[int, dict[str, str]], part: Any) -> None:
    """Streamed tool calls arrive in pieces keyed by index: id and name first, then the
    arguments in fragments."""
    slot = calls.setdefault(
        int(getattr(part, "index", 0) or 0), {"id": "", "name": "", "arguments": ""}
    )
    if getattr(part, "id", None):
        slot["id"] = part.id
    function = getattr(part, "function", None)
    if function is not None:
        if getattr(function, "name", None):
            slot["name"] = function.name
        slot["arguments"] += getattr(function, "arguments", None) or ""


class TogetherProvider(SdkProvider):
    name = "together"
    user_key_name = "togetherai_api_key"
    status_error = together.APIStatusError

    def _new_client(self, api_key: str) -> together.AsyncTogether:
        return together.AsyncTogether(
            api_key=api_key,
            base_url=self._base_url,
            timeout=self._timeout,
            max_retries=self._retries,
        )


class OpenAIProvider(SdkProvider):
    name = "openai"
    user_key_name = "openai_api_key"
    status_error = openai.APIStatusError
    stream_options: ClassVar[dict[str, Any]] = {"stream_options": {"include_usage": True}}

    def _new_client(self, api_key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=api_key,
            base_url=self._base_url,
            timeout=self._timeout,
            max_retries=self._retries,
        )


@dataclass(frozen=True)
class Attempt:
    provider: ChatProvider
    api_key: str | None  # None: the server key


@dataclass
class ProviderChain:
    """Providers in order of preference, each behind its own circuit breaker."""

    providers: list[ChatProvider]
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    # (provider, outcome) -> None: how each call went, for metrics; outcomes are `answered`,
    # `failed` and `circuit_open`
    observer: Callable[[str, str], None] | None = None

    def observe(self, provider: str, outcome: str) -> None:
        if self.observer is not None:
            self.observer(provider, outcome)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderChain:
        def secret(value: Any) -> str | None:
            return value.get_secret_value() if value is not None else None

        providers: list[ChatProvider] = [
            TogetherProvider(
                settings.together_model,
                secret(settings.together_api_key),
                settings.together_base_url,
                settings,
            ),
            OpenAIProvider(
                settings.openai_model,
                secret(settings.openai_api_key),
                settings.openai_base_url,
                settings,
            ),
        ]
        breakers = {
            p.name: CircuitBreaker(settings.chat_breaker_failures, settings.chat_breaker_reset_s)
            for p in providers
        }
        return cls(providers, breakers)

    def attempts(self, user_keys: dict[str, str]) -> Iterator[Attempt]:
        """Providers to try, in order, lazily: each one's circuit is consulted only when the
        previous one has failed. A user's own key (by secret name) wins over the server key."""
        for provider in self.providers:
            own_key = user_keys.get(provider.user_key_name)
            if own_key is None and not provider.has_server_key():
                continue
            if not self.breakers[provider.name].allow():
                log.info("chat_provider_skipped", provider=provider.name, circuit="open")
                self.observe(provider.name, "circuit_open")
                continue
            yield Attempt(provider, own_key)

    def succeeded(self, attempt: Attempt) -> None:
        self.breakers[attempt.provider.name].succeeded()
        self.observe(attempt.provider.name, "answered")

    def failed(self, attempt: Attempt, error: ProviderError) -> None:
        log.warning("chat_provider_failed", provider=error.provider, reason=error.reason)
        self.observe(attempt.provider.name, "failed")
        breaker = self.breakers[attempt.provider.name]
        if error.trips:
            breaker.failed()
        else:
            breaker.released()

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()
