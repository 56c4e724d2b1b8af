-- A/B testing: the challenger's traffic share per family (read by serving, so a change applies
-- without a restart), its audit trail, every served forecast, and the realised outcome of each.
CREATE TABLE IF NOT EXISTS ab_weights (
    family             text PRIMARY KEY,
    challenger_weight  double precision NOT NULL
                       CHECK (challenger_weight >= 0 AND challenger_weight <= 1),
    actor              text NOT NULL,
    reason             text NOT NULL DEFAULT '',
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Append-only: who moved which family's weight, when, from what, to what and why.
CREATE TABLE IF NOT EXISTS ab_weight_events (
    id           bigserial PRIMARY KEY,
    family       text NOT NULL,
    from_weight  double precision,
    to_weight    double precision NOT NULL,
    actor        text NOT NULL,
    reason       text NOT NULL DEFAULT '',
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ab_weight_events_family ON ab_weight_events (family, id);

-- One row per forecast the API computed (cache hits repeat a logged one). Quantiles are of the
-- log return over `horizon` trading days after the `as_of` bar.
CREATE TABLE IF NOT EXISTS prediction_log (
    id          bigserial PRIMARY KEY,
    ticker      text NOT NULL,
    as_of       date NOT NULL,
    horizon     integer NOT NULL CHECK (horizon > 0),
    family      text NOT NULL,
    version     text NOT NULL,
    variant     text NOT NULL CHECK (variant IN ('champion', 'challenger')),
    q10         double precision NOT NULL,
    q50         double precision NOT NULL,
    q90         double precision NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (ticker, as_of, horizon, family, version)
);
CREATE INDEX IF NOT EXISTS prediction_log_family_horizon ON prediction_log (family, horizon, as_of);

-- Filled once the outcome bar (the horizon-th bar after as_of) exists; never updated after.
CREATE TABLE IF NOT EXISTS prediction_outcomes (
    prediction_id        bigint PRIMARY KEY REFERENCES prediction_log (id) ON DELETE CASCADE,
    outcome_date         date NOT NULL,
    realised_log_return  double precision NOT NULL,
    pinball_loss         double precision NOT NULL CHECK (pinball_loss >= 0),
    resolved_at          timestamptz NOT NULL DEFAULT now()
);
