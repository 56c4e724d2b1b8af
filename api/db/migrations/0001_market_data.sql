-- Instruments and daily bars. Close-only series keep NULL open/high/low/volume: never invented.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE IF NOT EXISTS instruments (
    ticker       text PRIMARY KEY CHECK (ticker ~ '^[A-Z0-9][A-Z0-9.\-]{0,14}$'),
    name         text NOT NULL,
    asset_type   text NOT NULL CHECK (asset_type IN ('equity', 'etf', 'index', 'user')),
    sector       text,
    source       text NOT NULL,
    universe_version text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS bars (
    ticker  text NOT NULL REFERENCES instruments (ticker) ON DELETE CASCADE,
    date    date NOT NULL,
    open    double precision CHECK (open > 0),
    high    double precision CHECK (high > 0),
    low     double precision CHECK (low > 0),
    close   double precision NOT NULL CHECK (close > 0),
    volume  double precision CHECK (volume >= 0),
    source  text NOT NULL,
    PRIMARY KEY (ticker, date),
    CHECK (high IS NULL OR low IS NULL OR high >= low)
);

-- Name search for GET /api/v1/stocks?q=
CREATE INDEX IF NOT EXISTS instruments_name_lower ON instruments (lower(name) text_pattern_ops);

CREATE TABLE IF NOT EXISTS bar_imports (
    id          bigserial PRIMARY KEY,
    ticker      text NOT NULL,
    filename    text NOT NULL,
    rows        integer NOT NULL,
    inserted    integer NOT NULL,
    updated     integer NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now()
);

-- TimescaleDB hypertable when the extension is installed *and* preloaded; otherwise the plain
-- table above, keyed by (ticker, date), serves the same queries.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND current_setting('shared_preload_libraries') LIKE '%timescaledb%' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        PERFORM create_hypertable('bars', 'date', if_not_exists => TRUE, migrate_data => TRUE);
    END IF;
END
$$;
