-- Dispatch: per-account outreach settings (also the row each claim locks), batches of
-- outbound messages, their items, and the durable ledger of dispatches the limits count.
CREATE TABLE IF NOT EXISTS outreach_settings (
    account_id TEXT PRIMARY KEY REFERENCES accounts(id),
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    quiet_hours JSONB,
    timezone TEXT,
    max_per_minute INTEGER CHECK (max_per_minute IS NULL OR max_per_minute > 0),
    max_per_hour INTEGER CHECK (max_per_hour IS NULL OR max_per_hour > 0),
    max_per_day INTEGER CHECK (max_per_day IS NULL OR max_per_day > 0),
    min_gap_seconds DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (min_gap_seconds >= 0),
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS outreach_batches (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    created_by TEXT REFERENCES users(id),
    idempotency_key TEXT,
    request_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'sending', 'paused', 'done', 'cancelled')),
    open_items INTEGER NOT NULL,
    total_items INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    UNIQUE (account_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS outreach_batches_account ON outreach_batches(account_id, status, created_at);

CREATE TABLE IF NOT EXISTS outreach_items (
    id TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL REFERENCES outreach_batches(id),
    account_id TEXT NOT NULL REFERENCES accounts(id),
    seq INTEGER NOT NULL,
    device_id TEXT REFERENCES devices(id),
    to_handle TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'dispatched', 'sent', 'failed', 'skipped', 'cancelled')),
    reason TEXT,
    offers INTEGER NOT NULL DEFAULT 0,
    dispatched_at TIMESTAMPTZ,
    lease_until TIMESTAMPTZ,
    result_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (batch_id, seq)
);
-- The claim walks a device's pending items in batch order (batch ids are time-ordered).
CREATE INDEX IF NOT EXISTS outreach_items_claim ON outreach_items(device_id, status, batch_id, seq);
CREATE INDEX IF NOT EXISTS outreach_items_batch ON outreach_items(batch_id, status);

-- One row per dispatch (an item handed to a device for the first time); the limits count these.
CREATE TABLE IF NOT EXISTS outreach_dispatches (
    item_id TEXT PRIMARY KEY REFERENCES outreach_items(id),
    account_id TEXT NOT NULL REFERENCES accounts(id),
    device_id TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS outreach_dispatches_window ON outreach_dispatches(account_id, at);
