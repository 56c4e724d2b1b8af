-- Work `stockcopilot up` does after the API is ready (the similarity index, network models,
-- the classical challenger): one row per task of the current start, for /readyz.
CREATE TABLE IF NOT EXISTS warmup_tasks (
    name        text PRIMARY KEY,
    position    integer NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    detail      text NOT NULL DEFAULT '',
    started_at  timestamptz,
    finished_at timestamptz
);
