-- Accounts and security. E-mail addresses are stored only as AES-256-GCM ciphertext
-- (api.security.crypto) plus an HMAC-SHA256 blind index for lookup; passwords as argon2id hashes;
-- refresh tokens, API keys and one-time tokens only as SHA-256 hashes of high-entropy secrets.
CREATE TABLE IF NOT EXISTS users (
    id                 uuid PRIMARY KEY,
    email_ct           text NOT NULL,
    email_index        text NOT NULL UNIQUE,
    password_hash      text,
    display_name       text NOT NULL,
    role               text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    timezone           text NOT NULL DEFAULT 'UTC',
    currency           text NOT NULL DEFAULT 'USD',
    settings           jsonb NOT NULL DEFAULT '{}'::jsonb,
    email_verified_at  timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- One row per sign-in (a refresh-token family). Live state is mirrored in Redis.
CREATE TABLE IF NOT EXISTS sessions (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text,
    user_agent      text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id, created_at);

CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash  text PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz  -- set when rotated: presenting it again is token reuse
);
CREATE INDEX IF NOT EXISTS refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE IF NOT EXISTS api_keys (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL,
    prefix        text NOT NULL UNIQUE,
    key_hash      text NOT NULL UNIQUE,
    scopes        text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id, created_at);

CREATE TABLE IF NOT EXISTS one_time_tokens (
    token_hash  text PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE TABLE IF NOT EXISTS consents (
    id       bigserial PRIMARY KEY,
    user_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind     text NOT NULL,
    granted  boolean NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);

-- Secrets users keep with us (e.g. their own TogetherAI/OpenAI keys), encrypted.
CREATE TABLE IF NOT EXISTS user_secrets (
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL,
    ciphertext  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, name)
);

-- Security audit trail. No foreign key: it outlives an erased account, whose rows are then
-- anonymised (user_id set to NULL, details stripped of identifiers).
CREATE TABLE IF NOT EXISTS security_events (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    event    text NOT NULL,
    user_id  uuid,
    ip_hash  text,
    detail   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS security_events_user ON security_events (user_id, id);
