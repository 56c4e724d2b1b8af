-- AI chat: conversations, their messages, and per-user daily usage (quota and metering).
-- Everything belongs to a user and goes with the account on erasure; messages older than the
-- retention setting are purged (`stockcopilot chat purge`).
CREATE TABLE IF NOT EXISTS conversations (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS conversations_user ON conversations (user_id, updated_at DESC);

CREATE TABLE IF NOT EXISTS chat_messages (
    id               bigserial PRIMARY KEY,
    conversation_id  uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role             text NOT NULL CHECK (role IN ('user', 'assistant')),
    content          text NOT NULL,
    provider         text,  -- who answered (together, openai, local); NULL for the user's own
    tools_used       jsonb NOT NULL DEFAULT '[]'::jsonb,
    tokens_in        integer NOT NULL DEFAULT 0,
    tokens_out       integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'assistant') = (provider IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS chat_messages_conversation ON chat_messages (conversation_id, id);
CREATE INDEX IF NOT EXISTS chat_messages_created ON chat_messages (created_at);

-- One row per user, UTC day and provider: requests answered and tokens spent.
CREATE TABLE IF NOT EXISTS chat_usage (
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day         date NOT NULL,
    provider    text NOT NULL,
    requests    integer NOT NULL DEFAULT 0,
    tokens_in   bigint NOT NULL DEFAULT 0,
    tokens_out  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day, provider)
);
