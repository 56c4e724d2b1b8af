-- Portfolios, their transactions (the ledger; positions are derived from it, never stored) and
-- watchlists. Everything belongs to a user and goes with the account on erasure.
CREATE TABLE IF NOT EXISTS portfolios (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           text NOT NULL,
    base_currency  text NOT NULL DEFAULT 'USD',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

CREATE TABLE IF NOT EXISTS portfolio_transactions (
    id               uuid PRIMARY KEY,
    portfolio_id     uuid NOT NULL REFERENCES portfolios (id) ON DELETE CASCADE,
    sequence         bigserial,
    type             text NOT NULL
                     CHECK (type IN ('buy', 'sell', 'dividend', 'deposit', 'withdraw', 'fee')),
    date             date NOT NULL,
    ticker           text,
    quantity         numeric NOT NULL DEFAULT 0 CHECK (quantity >= 0),
    price            numeric NOT NULL DEFAULT 0 CHECK (price >= 0),
    amount           numeric NOT NULL DEFAULT 0 CHECK (amount >= 0),
    fee              numeric NOT NULL DEFAULT 0 CHECK (fee >= 0),
    note             text NOT NULL DEFAULT '',
    idempotency_key  text,
    request_hash     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((type IN ('buy', 'sell', 'dividend')) = (ticker IS NOT NULL)),
    UNIQUE (portfolio_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS portfolio_transactions_ledger
    ON portfolio_transactions (portfolio_id, date, sequence);

CREATE TABLE IF NOT EXISTS watchlists (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

CREATE TABLE IF NOT EXISTS watchlist_items (
    watchlist_id  uuid NOT NULL REFERENCES watchlists (id) ON DELETE CASCADE,
    ticker        text NOT NULL,
    added_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (watchlist_id, ticker)
);
