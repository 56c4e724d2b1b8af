"""Chat conversations and their answers.

An answer is produced by the first provider that works (TogetherAI, then OpenAI; a user's own
key first), running the model ↔ tool loop up to `chat_max_tool_rounds` times; when none is
configured or reachable the local responder answers from the same tools. Whether streamed or
not, the text goes through the same output filter, ends with the disclaimer, is stored with the
provider that answered and the tools it used, and its tokens are metered against the user's
daily quota. A provider failing mid-stream is followed by a `Reset` (drop what was shown) and
the next provider's answer.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import asyncpg
import structlog

from api.db.chat import (
    ConversationRepository,
    ConversationRow,
    MessageRepository,
    MessageRow,
    UsageRepository,
)
from api.db.users import UserSecretRepository
from api.errors import ProblemError
from api.security.crypto import DecryptionError, Keyring, secret_context
from api.services.chat.local import LocalResponder
from api.services.chat.providers import (
    Attempt,
    Completion,
    Message,
    ProviderChain,
    ProviderError,
    TextDelta,
    ToolSchema,
)
from api.services.chat.safety import (
    SYSTEM_PROMPT,
    Grounding,
    OutputFilter,
    check_input,
    disclaimer_after,
    neutralise,
    plain_title,
    tool_message,
)
from api.services.chat.tools import SPECS, ChatTools, ToolResult, jsonable
from api.settings import Settings

log = structlog.get_logger(__name__)

HISTORY_MESSAGES = 20  # earlier messages sent to the model as context
DEFAULT_TITLE = "New conversation"
TITLE_CHARS = 60  # of a title made from the first question
MAX_TITLE_CHARS = 120  # of a title the user gives
NO_ANSWER = "I could not put an answer together from the tools available."
LOCAL = "local"


@dataclass(frozen=True)
class Chunk:
    text: str


@dataclass(frozen=True)
class Reset:
    """Drop the text streamed so far: its provider failed and the next one answers afresh."""

    provider: str


@dataclass(frozen=True)
class Done:
    message: MessageRow


type AnswerEvent = Chunk | Reset | Done


@dataclass(frozen=True)
class Turn:
    conversation: ConversationRow
    question: str
    messages: list[Message]  # system prompt, recent history, the question
    user_keys: dict[str, str]  # the user's own provider keys, by secret name
    earlier_answers: list[str]  # their numbers were checked when given; a follow-up may repeat them


@dataclass
class Draft:
    """One provider's answer in the making."""

    filter: OutputFilter
    pieces: list[str] = field(default_factory=list)
    results: list[ToolResult] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0

    def emit(self, text: str) -> str:
        cleaned = self.filter.feed(text)
        if cleaned:
            self.pieces.append(cleaned)
        return cleaned


class ChatService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        chain: ProviderChain,
        tools: ChatTools,
        keyring: Keyring,
        user_id: uuid.UUID,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._chain = chain
        self._tools = tools
        self._keyring = keyring
        self._user_id = user_id
        self._conversations = ConversationRepository(pool)
        self._messages = MessageRepository(pool)
        self._usage = UsageRepository(pool)

    # ------------------------------------------------------------------ conversations

    async def create(self, title: str | None) -> ConversationRow:
        return await self._conversations.create(
            self._user_id, plain_title(title or "", MAX_TITLE_CHARS) or DEFAULT_TITLE
        )

    async def list(self, limit: int, offset: int) -> list[ConversationRow]:
        return await self._conversations.of_user(self._user_id, limit, offset)

    async def owned(self, conversation_id: uuid.UUID) -> ConversationRow:
        """The caller's conversation, or 404 — whoever else it may belong to."""
        row = await self._conversations.owned(conversation_id, self._user_id)
        if row is None:
            raise ProblemError(404, "conversation_not_found", "no such conversation")
        return row

    async def messages(self, conversation: ConversationRow) -> list[MessageRow]:
        return await self._messages.of_conversation(conversation.id)

    async def delete(self, conversation: ConversationRow) -> None:
        await self._conversations.delete(conversation.id)

    # ------------------------------------------------------------------ answers

    async def start(self, conversation: ConversationRow, content: str) -> Turn:
        """Validate and store the question (422 when too long, 429 when today's quota is
        spent) and assemble what the model will see."""
        question = check_input(content, self._settings.chat_max_input_chars)
        await self._check_quota()
        history = await self._messages.of_conversation(conversation.id, last=HISTORY_MESSAGES)
        await self._messages.add(conversation.id, "user", question)
        first_line = plain_title(question, TITLE_CHARS) or DEFAULT_TITLE
        retitle = conversation.title == DEFAULT_TITLE and not history
        await self._conversations.touch(conversation.id, first_line if retitle else None)
        messages: list[Message] = [{"role": "system", "content": SYSTEM_PROMPT}]
        messages += [
            {"role": m.role, "content": neutralise(m.content) if m.role == "user" else m.content}
            for m in history
        ]
        messages.append({"role": "user", "content": neutralise(question)})
        answers = [m.content for m in history if m.role == "assistant"]
        return Turn(conversation, question, messages, await self._user_keys(), answers)

    async def reply(self, turn: Turn) -> MessageRow:
        async for event in self.answer(turn, stream=False):
            if isinstance(event, Done):
                return event.message
        raise RuntimeError("an answer always ends with Done")

    async def answer(self, turn: Turn, stream: bool) -> AsyncIterator[AnswerEvent]:
        for attempt in self._chain.attempts(turn.user_keys):
            draft = self._draft(turn)
            try:
                async for chunk in self._converse(attempt, turn, draft, stream):
                    yield chunk
            except ProviderError as error:
                self._chain.failed(attempt, error)
                await self._meter(attempt.provider.name, draft, answered=False)
                if draft.pieces:
                    yield Reset(attempt.provider.name)
                continue
            self._chain.succeeded(attempt)
            async for event in self._finish(turn, attempt.provider.name, draft):
                yield event
            return
        draft = self._draft(turn)
        text, draft.results = await LocalResponder(self._pool, self._tools).answer(turn.question)
        for result in draft.results:
            draft.filter.grounding.add([result.arguments, result.data])
        for word in re.findall(r"\S+\s*|\s+", text):
            if cleaned := draft.emit(word):
                yield Chunk(cleaned)
        self._chain.observe(LOCAL, "answered")
        async for event in self._finish(turn, LOCAL, draft):
            yield event

    def _draft(self, turn: Turn) -> Draft:
        grounding = Grounding(turn.question, *turn.earlier_answers)
        return Draft(OutputFilter(self._settings.chat_link_hosts, grounding))

    async def _call(
        self, attempt: Attempt, messages: list[Message], tools: list[ToolSchema], stream: bool
    ) -> AsyncIterator[TextDelta | Completion]:
        if stream:
            async for event in attempt.provider.stream(messages, tools, attempt.api_key):
                yield event
        else:
            yield await attempt.provider.complete(messages, tools, attempt.api_key)

    async def _converse(
        self, attempt: Attempt, turn: Turn, draft: Draft, stream: bool
    ) -> AsyncIterator[Chunk]:
        """The model ↔ tool loop with one provider; raises ProviderError when it fails."""
        messages = list(turn.messages)
        schemas = self._tools.schemas()
        rounds = self._settings.chat_max_tool_rounds
        for round_number in range(rounds + 1):
            offered = schemas if round_number < rounds else []  # the last round must answer
            completion: Completion | None = None
            streamed = False
            async for event in self._call(attempt, messages, offered, stream):
                if isinstance(event, TextDelta):
                    streamed = True
                    if cleaned := draft.emit(event.text):
                        yield Chunk(cleaned)
                else:
                    completion = event
            assert completion is not None
            draft.tokens_in += completion.tokens_in
            draft.tokens_out += completion.tokens_out
            if not streamed and completion.content and (cleaned := draft.emit(completion.content)):
                yield Chunk(cleaned)
            if not completion.tool_calls or not offered:
                return
            if completion.content and (cleaned := draft.emit("\n\n")):
                yield Chunk(cleaned)
            messages.append(
                {
                    "role": "assistant",
                    "content": completion.content or None,
                    "tool_calls": [c.as_message_part() for c in completion.tool_calls],
                }
            )
            for call in completion.tool_calls:
                result = await self._tools.run(call.name, call.arguments)
                draft.results.append(result)
                draft.filter.grounding.add([result.arguments, result.data])
                known = call.name if any(s.name == call.name for s in SPECS) else "unknown"
                messages.append(tool_message(call.id, known, jsonable(result.data)))

    async def _finish(self, turn: Turn, provider: str, draft: Draft) -> AsyncIterator[AnswerEvent]:
        tail = draft.filter.flush()
        text = "".join(draft.pieces) + tail
        if not text.strip():
            tail, text = tail + NO_ANSWER, text + NO_ANSWER
        closing = tail + disclaimer_after(text)
        if closing:
            yield Chunk(closing)
        tools_used: list[dict[str, Any]] = [
            {"name": r.name, "arguments": r.arguments, "ok": r.ok} for r in draft.results
        ]
        async with self._pool.acquire() as conn, conn.transaction():
            message = await MessageRepository(conn).add(
                turn.conversation.id,
                "assistant",
                text + disclaimer_after(text),
                provider,
                tools_used,
                (draft.tokens_in, draft.tokens_out),
            )
            await ConversationRepository(conn).touch(turn.conversation.id)
        await self._meter(provider, draft, answered=True)
        yield Done(message)

    # ------------------------------------------------------------------ keys and quota

    async def _meter(self, provider: str, draft: Draft, answered: bool) -> None:
        if answered or draft.tokens_in or draft.tokens_out:
            await self._usage.record(
                self._user_id,
                datetime.now(UTC).date(),
                provider,
                draft.tokens_in,
                draft.tokens_out,
                requests=1 if answered else 0,
            )

    async def _check_quota(self) -> None:
        now = datetime.now(UTC)
        used = await self._usage.tokens_on(self._user_id, now.date())
        quota = self._settings.chat_daily_token_quota
        if used >= quota:
            midnight = datetime.combine(now.date() + timedelta(days=1), time(), UTC)
            raise ProblemError(
                429,
                "chat_quota_exceeded",
                f"today's chat quota of {quota} tokens is spent; it renews at 00:00 UTC",
                headers={"Retry-After": str(int((midnight - now).total_seconds()) + 1)},
                used=used,
                quota=quota,
            )

    async def _user_keys(self) -> dict[str, str]:
        """The user's own provider keys, decrypted (one that no longer decrypts is skipped)."""
        secrets = UserSecretRepository(self._pool)
        keys: dict[str, str] = {}
        for provider in self._chain.providers:
            name = provider.user_key_name
            ciphertext = await secrets.get(self._user_id, name)
            if ciphertext is None:
                continue
            try:
                keys[name] = self._keyring.decrypt(ciphertext, secret_context(self._user_id, name))
            except DecryptionError:
                log.warning("chat_user_key_unreadable", name=name)
        return keys


async def purge_expired(db: asyncpg.Pool | asyncpg.Connection, retention_days: int) -> int:
    """Delete chat messages older than `retention_days` (and conversations idle since before
    then); the number of messages deleted."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    return await MessageRepository(db).purge_before(cutoff)
