-- The purge's successful runs, whichever instance (or `run_server.py purge`) ran
-- them, so an admin sees the newest one on any instance. Kept as long as history.
CREATE TABLE purge_runs (
    id            bigserial PRIMARY KEY,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL,
    deleted       bigint NOT NULL,
    deleted_other bigint NOT NULL
);
