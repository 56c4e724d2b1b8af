-- The market clock, provisional bars and corporate actions.
--
-- `market_clock` holds the simulated "today" of a replay (one row; none means the real clock).
-- Every query the API answers reads bars through `visible_bars`, which hides bars after that day,
-- so a replayed day is "today" everywhere at once: quotes, analysis, portfolios, predictions,
-- and the scoring of past forecasts. `run` counts the replay's passes: a loop starts a new run,
-- and forecasts logged in an earlier run are never mixed with the new run's.
-- run numbers only ever grow, across stops and restarts: a new replay never reuses one
CREATE SEQUENCE IF NOT EXISTS market_clock_runs;

CREATE TABLE IF NOT EXISTS market_clock (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    day        date NOT NULL,
    run        integer NOT NULL CHECK (run > 0),
    started_at timestamptz NOT NULL DEFAULT now(),
    moved_at   timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION market_today() RETURNS date
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce((SELECT day FROM market_clock), 'infinity'::date) $$;

CREATE OR REPLACE FUNCTION market_run() RETURNS integer
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce((SELECT run FROM market_clock), 0) $$;

-- A bar of a session still open (polled intraday) is provisional: replaced when final, never
-- used to score a forecast.
ALTER TABLE bars ADD COLUMN IF NOT EXISTS final boolean NOT NULL DEFAULT true;

-- "the newest bar", a day's bars, the days to replay: by date across tickers
CREATE INDEX IF NOT EXISTS bars_date ON bars (date);

-- `(SELECT market_today())`: evaluated once per query (an InitPlan), not once per index probe
CREATE OR REPLACE VIEW visible_bars AS
    SELECT ticker, date, open, high, low, close, volume, source, final
    FROM bars WHERE date <= (SELECT market_today());

-- Splits and dividends as the provider reported them, and each rescaling of stored history that
-- kept an adjusted series continuous across them (bars before `before` multiplied by the
-- factors: prices by price_factor, volumes by volume_factor).
CREATE TABLE IF NOT EXISTS corporate_actions (
    ticker      text NOT NULL REFERENCES instruments (ticker) ON DELETE CASCADE,
    ex_date     date NOT NULL,
    split       double precision NOT NULL DEFAULT 1 CHECK (split > 0),
    dividend    double precision NOT NULL DEFAULT 0 CHECK (dividend >= 0),
    source      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ticker, ex_date)
);

CREATE TABLE IF NOT EXISTS bar_adjustments (
    id            bigserial PRIMARY KEY,
    ticker        text NOT NULL REFERENCES instruments (ticker) ON DELETE CASCADE,
    before        date NOT NULL,
    price_factor  double precision NOT NULL CHECK (price_factor > 0),
    volume_factor double precision NOT NULL CHECK (volume_factor > 0),
    reason        text NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);

-- Forecasts belong to the clock run they were made in (0: the real clock).
ALTER TABLE prediction_log ADD COLUMN IF NOT EXISTS clock_run integer NOT NULL DEFAULT 0;
ALTER TABLE prediction_log
    DROP CONSTRAINT IF EXISTS prediction_log_ticker_as_of_horizon_family_version_key;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'prediction_log_forecast_key') THEN
        ALTER TABLE prediction_log ADD CONSTRAINT prediction_log_forecast_key
            UNIQUE (ticker, as_of, horizon, family, version, clock_run);
    END IF;
END
$$;

-- The feed's health, for /readyz and the feed gauges across replicas.
CREATE TABLE IF NOT EXISTS feed_status (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    provider      text NOT NULL,
    last_attempt  timestamptz,
    last_success  timestamptz,
    newest_bar    date,
    last_error    text,
    failures      integer NOT NULL DEFAULT 0
);
