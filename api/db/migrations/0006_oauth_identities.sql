-- Social / OIDC sign-in: which provider account (provider, subject) belongs to which user.
-- Accounts are linked by a verified e-mail address on first sign-in.
CREATE TABLE IF NOT EXISTS oauth_identities (
    provider    text NOT NULL,
    subject     text NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, subject)
);
CREATE INDEX IF NOT EXISTS oauth_identities_user ON oauth_identities (user_id);
