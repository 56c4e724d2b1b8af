-- Similarity search: every ticker's z-normalised window of recent daily log returns, for every
-- date, with what followed (log returns over the next 5 and 20 bars, NULL until known).
-- One table for all window lengths; each length has its own HNSW index over the cast vector.
CREATE TABLE IF NOT EXISTS return_windows (
    ticker     text NOT NULL REFERENCES instruments (ticker) ON DELETE CASCADE,
    window_len integer NOT NULL,
    date       date NOT NULL,
    embedding  vector NOT NULL,
    fwd_5      double precision,
    fwd_20     double precision,
    PRIMARY KEY (window_len, ticker, date)
);
CREATE INDEX IF NOT EXISTS return_windows_hnsw_20 ON return_windows
    USING hnsw ((embedding::vector(20)) vector_l2_ops) WHERE window_len = 20;
CREATE INDEX IF NOT EXISTS return_windows_hnsw_30 ON return_windows
    USING hnsw ((embedding::vector(30)) vector_l2_ops) WHERE window_len = 30;
CREATE INDEX IF NOT EXISTS return_windows_hnsw_60 ON return_windows
    USING hnsw ((embedding::vector(60)) vector_l2_ops) WHERE window_len = 60;
