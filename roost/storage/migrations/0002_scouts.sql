-- Scouts (polled or pushed sources) and their items: one row per source message, from first
-- sight (pending) through triage (queued | discarded | failed) to delivery (delivered, acked)
-- or expiry. The unique (scout_id, source_msg_ref) is what makes every ref handled once.
CREATE TABLE IF NOT EXISTS scouts (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    provider TEXT NOT NULL,
    config JSONB NOT NULL,
    classifier TEXT NOT NULL DEFAULT 'rules',
    classifier_config JSONB NOT NULL,
    poll_interval_s DOUBLE PRECISION NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    auto_trash_spam BOOLEAN NOT NULL DEFAULT FALSE,
    device_inactivity_pause_days INTEGER,
    ttl_days INTEGER NOT NULL DEFAULT 30,
    max_failures INTEGER NOT NULL DEFAULT 5,
    cursor TEXT,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    last_run_at TIMESTAMPTZ,
    next_run_at TIMESTAMPTZ,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS scouts_user ON scouts(user_id, id);
CREATE INDEX IF NOT EXISTS scouts_due ON scouts(enabled, next_run_at);

CREATE TABLE IF NOT EXISTS scout_items (
    id TEXT PRIMARY KEY,
    scout_id TEXT NOT NULL REFERENCES scouts(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id),
    source_type TEXT NOT NULL,
    source_msg_ref TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN
        ('pending', 'queued', 'delivered', 'acked', 'discarded', 'failed', 'expired')),
    sender TEXT,
    raw_subject TEXT,
    raw_snippet TEXT,
    body TEXT,
    verdict TEXT,
    reason TEXT,
    category TEXT,
    payload JSONB,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error TEXT,
    archived_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    triaged_at TIMESTAMPTZ,
    delivered_at TIMESTAMPTZ,
    acked_at TIMESTAMPTZ,
    expires_at TIMESTAMPTZ,
    UNIQUE (scout_id, source_msg_ref)
);
CREATE INDEX IF NOT EXISTS scout_items_scout_status ON scout_items(scout_id, status, id);
CREATE INDEX IF NOT EXISTS scout_items_user_status ON scout_items(user_id, status, id);
CREATE INDEX IF NOT EXISTS scout_items_expiry ON scout_items(status, expires_at);
