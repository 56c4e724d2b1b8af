-- A forecast is `live` when it was made from the newest bar its ticker had at the time: only
-- those count in A/B reports and rollback checks, because a forecast for a past as-of date could
-- be asked for after its outcome was already known. Past ones stay logged for the history view.
ALTER TABLE prediction_log ADD COLUMN IF NOT EXISTS live boolean NOT NULL DEFAULT false;

-- `shadow`: the previous champion, scored silently on the same live requests while a newly
-- promoted champion is on probation, so the two can be compared forecast by forecast.
ALTER TABLE prediction_log DROP CONSTRAINT IF EXISTS prediction_log_variant_check;
ALTER TABLE prediction_log ADD CONSTRAINT prediction_log_variant_check
    CHECK (variant IN ('champion', 'challenger', 'shadow'));

CREATE INDEX IF NOT EXISTS prediction_log_live_family_version
    ON prediction_log (family, version) WHERE live;
