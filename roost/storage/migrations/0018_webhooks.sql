-- Signed webhooks (issue 19): an account's endpoints and the delivery outbox. The same SQL on both
-- dialects (SQLite reads JSONB, BOOLEAN and TIMESTAMPTZ through the adapters of roost.storage.sqlite).
--
-- An endpoint's secret is stored sealed ("fernet:<token>", HKDF sub-key of ROOST_SECRET_KEYS) when a
-- secret key is set, else as "plain:<whsec_...>"; during a rotation window the previous secret is
-- kept (previous_secret, previous_secret_until) and signs too. last_seq hands out the endpoint's
-- delivery sequence: emit increments it with an UPDATE, whose row lock is held until the emitting
-- transaction commits, so an endpoint's deliveries commit in sequence order (as handoff_seq does).
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    url TEXT NOT NULL,
    events JSONB NOT NULL,
    description TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_until TIMESTAMPTZ,
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    disabled_reason TEXT,
    failing_since TIMESTAMPTZ,
    UNIQUE (account_id, url)
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_account ON webhook_endpoints(account_id, id);

-- One row per (endpoint, event): pending -> sending (claimed, leased) -> delivered | failed (given
-- up), and back to pending for a retry or after a lease ran out. The head of an endpoint is its
-- lowest seq still pending or sending; only the head is ever claimed (in order per endpoint).
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    event TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    first_attempt_at TIMESTAMPTZ,
    last_attempt_at TIMESTAMPTZ,
    last_status_code INTEGER,
    last_error TEXT,
    delivered_at TIMESTAMPTZ,
    claimed_by TEXT,
    lease_until TIMESTAMPTZ,
    UNIQUE (endpoint_id, seq)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_open ON webhook_deliveries(endpoint_id, seq)
    WHERE status IN ('pending', 'sending');
CREATE INDEX IF NOT EXISTS webhook_deliveries_done ON webhook_deliveries(created_at)
    WHERE status IN ('delivered', 'failed');
