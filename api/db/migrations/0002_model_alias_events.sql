-- MLflow keeps no alias history; every move of `champion`/`challenger` is recorded here, by the
-- CLI, by serving when it notices a move made in the MLflow UI, and by automatic rollback.
CREATE TABLE IF NOT EXISTS model_alias_events (
    id            bigserial PRIMARY KEY,
    model         text NOT NULL,
    alias         text NOT NULL,
    from_version  text,
    to_version    text,
    actor         text NOT NULL,
    reason        text NOT NULL DEFAULT '',
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS model_alias_events_model_alias ON model_alias_events (model, alias, id);
