-- Issue 20 (console, session processors and mail): each processor run is kept (the console's recent
-- runs: duration, files, bytes, items, failures), and an operator may cancel mail.
CREATE TABLE IF NOT EXISTS processor_runs (
    id TEXT PRIMARY KEY,
    processor TEXT NOT NULL,
    kind TEXT NOT NULL,               -- schedule | manual
    actor TEXT,                       -- who asked, for a manual run
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    duration_s DOUBLE PRECISION NOT NULL,
    outcome TEXT NOT NULL,            -- ok | failed | cancelled
    scanned BIGINT NOT NULL DEFAULT 0,
    processed BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    bytes_read BIGINT NOT NULL DEFAULT 0,
    items BIGINT NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS processor_runs_recent ON processor_runs(processor, id);

-- A cancelled mail is 'failed' with cancelled_at set (the status CHECK stays as it is on both backends):
-- the mailer never claims it, and the console lists it apart from mail that failed on its own.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS cancelled_at TIMESTAMPTZ;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS cancelled_by TEXT;
-- The console's outbox by state, newest first (ids are time-ordered), counted up to a cap.
CREATE INDEX IF NOT EXISTS outbox_state_recent ON outbox(status, id);
CREATE INDEX IF NOT EXISTS outbox_cancelled ON outbox(id) WHERE cancelled_at IS NOT NULL;
