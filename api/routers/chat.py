"""/api/v1/chat: conversations with the assistant, answered in one piece or streamed (SSE).

Needs the `chat` scope. Ownership is one dependency (`OwnedConversation`): a conversation that
is not the caller's answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from api.db.chat import ConversationRow, MessageRow
from api.deps import MarketDataDep, Offset, PoolDep, PredictionsDep, PrincipalDep, require_scope
from api.routers.market import MarketDep
from api.schemas import RequestModel
from api.services.chat.service import ChatService, Chunk, Done, Reset
from api.services.chat.tools import ChatTools

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api/v1/chat", tags=["chat"], dependencies=[require_scope("chat")])
MAX_BODY_CHARS = 100_000  # the configured limit (chat_max_input_chars) is checked below it


class ConversationIn(RequestModel):
    title: str | None = Field(default=None, max_length=120)

    model_config = ConfigDict(json_schema_extra={"examples": [{"title": "Apple this quarter"}]})


EMPTY_CONVERSATION = ConversationIn()  # the body is optional


class ConversationOut(BaseModel):
    id: uuid.UUID
    title: str
    created_at: datetime
    updated_at: datetime


class ToolUse(BaseModel):
    name: str
    arguments: dict[str, Any]
    ok: bool


class MessageOut(BaseModel):
    id: int
    role: str
    content: str
    provider: str | None = Field(description="together, openai or local; null for your own")
    tools_used: list[ToolUse]
    created_at: datetime


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]


class MessageIn(RequestModel):
    content: str = Field(min_length=1, max_length=MAX_BODY_CHARS)

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"content": "How did AAPL close, and what is RSI?"}]}
    )


class ReplyOut(BaseModel):
    message: MessageOut


def _conversation_out(row: ConversationRow) -> ConversationOut:
    return ConversationOut(
        id=row.id, title=row.title, created_at=row.created_at, updated_at=row.updated_at
    )


def _message_out(row: MessageRow) -> MessageOut:
    return MessageOut(
        id=row.id,
        role=row.role,
        content=row.content,
        provider=row.provider,
        tools_used=[ToolUse(**t) for t in row.tools_used],
        created_at=row.created_at,
    )


async def get_chat(
    request: Request,
    principal: PrincipalDep,
    pool: PoolDep,
    market_data: MarketDataDep,
    market: MarketDep,
    predictions: PredictionsDep,
) -> ChatService:
    state = request.app.state
    tools = ChatTools(pool, principal, market_data, market, predictions, clock=state.clock)
    return ChatService(pool, state.settings, state.chat, tools, state.keyring, principal.user_id)


ChatDep = Annotated[ChatService, Depends(get_chat)]


async def owned_conversation(conversation_id: uuid.UUID, chat: ChatDep) -> ConversationRow:
    return await chat.owned(conversation_id)


OwnedConversation = Annotated[ConversationRow, Depends(owned_conversation)]


@router.post("/conversations", response_model=ConversationOut, status_code=201)
async def create_conversation(
    chat: ChatDep, body: Annotated[ConversationIn, Body()] = EMPTY_CONVERSATION
) -> ConversationOut:
    """Start a conversation (titled after its first question unless you name it)."""
    return _conversation_out(await chat.create(body.title))


@router.get("/conversations", response_model=list[ConversationOut])
async def list_conversations(
    chat: ChatDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> list[ConversationOut]:
    """Your conversations, most recently active first."""
    return [_conversation_out(r) for r in await chat.list(limit, offset)]


@router.get("/conversations/{conversation_id}", response_model=ConversationDetail)
async def read_conversation(conversation: OwnedConversation, chat: ChatDep) -> ConversationDetail:
    """One conversation with its messages, oldest first."""
    messages = await chat.messages(conversation)
    return ConversationDetail(
        **_conversation_out(conversation).model_dump(),
        messages=[_message_out(m) for m in messages],
    )


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(conversation: OwnedConversation, chat: ChatDep) -> None:
    """Delete a conversation and all its messages."""
    await chat.delete(conversation)


SSE_EXAMPLE = (
    'event: chunk\ndata: {"content": "AAPL closed at 129.93 "}\n\n'
    'event: message\ndata: {"message": {"role": "assistant", "content": "…", '
    '"provider": "together", "tools_used": [...]}}\n\n'
)


@router.post(
    "/conversations/{conversation_id}/messages",
    response_model=ReplyOut,
    responses={
        200: {
            "description": "The answer; with `Accept: text/event-stream`, Server-Sent Events: "
            "`chunk` events in order, `reset` when a failing provider's partial text is to be "
            "dropped, and a final `message` event carrying the stored answer (or `error`).",
            "content": {
                "text/event-stream": {"schema": {"type": "string"}, "example": SSE_EXAMPLE}
            },
        },
        422: {"description": "empty or too long (`input_too_long`)"},
        429: {"description": "today's token quota is spent (`chat_quota_exceeded`)"},
    },
)
async def send_message(
    conversation: OwnedConversation,
    chat: ChatDep,
    body: MessageIn,
    accept: Annotated[str, Header()] = "application/json",
) -> Any:
    """Ask the assistant; it answers from tool results only, naming the provider that answered."""
    turn = await chat.start(conversation, body.content)
    if "text/event-stream" not in accept:
        return ReplyOut(message=_message_out(await chat.reply(turn)))

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for event in chat.answer(turn, stream=True):
                if isinstance(event, Chunk):
                    yield {"event": "chunk", "data": json.dumps({"content": event.text})}
                elif isinstance(event, Reset):
                    yield {"event": "reset", "data": json.dumps({"provider": event.provider})}
                elif isinstance(event, Done):
                    reply = ReplyOut(message=_message_out(event.message))
                    yield {"event": "message", "data": reply.model_dump_json()}
        except Exception:  # the status line is long gone: the stream ends with an error event
            log.exception("chat_stream_failed", conversation=str(conversation.id))
            problem = {"code": "internal_error", "detail": "unexpected server error"}
            yield {"event": "error", "data": json.dumps(problem)}

    return EventSourceResponse(events())
