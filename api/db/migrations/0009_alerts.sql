-- Alerts a user sets on tickers or portfolios, and the notifications they (and other events)
-- produce. Both belong to the user and go with the account on erasure.
CREATE TABLE IF NOT EXISTS alerts (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind          text NOT NULL
                  CHECK (kind IN ('price', 'move', 'indicator', 'prediction', 'drawdown')),
    ticker        text,
    portfolio_id  uuid REFERENCES portfolios (id) ON DELETE CASCADE,
    condition     jsonb NOT NULL,
    note          text NOT NULL DEFAULT '',
    active        boolean NOT NULL DEFAULT true,
    -- level conditions fire when they become true: the state seen on the last evaluated bar
    last_state    boolean,
    last_checked  date,
    last_fired_at timestamptz,
    fired_count   integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'drawdown') = (portfolio_id IS NOT NULL)),
    CHECK ((kind = 'drawdown') = (ticker IS NULL))
);
CREATE INDEX IF NOT EXISTS alerts_user ON alerts (user_id, created_at);
CREATE INDEX IF NOT EXISTS alerts_active_ticker ON alerts (ticker) WHERE active;

CREATE TABLE IF NOT EXISTS notifications (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    title       text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    alert_id    uuid REFERENCES alerts (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    read_at     timestamptz
);
CREATE INDEX IF NOT EXISTS notifications_user ON notifications (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS notifications_unread ON notifications (user_id) WHERE read_at IS NULL;
