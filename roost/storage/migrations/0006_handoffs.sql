-- Handoffs (issue 7): the handoffs, their event outbox with a per-account sequence, the counter
-- that allocates it, and the per-recipient record of escalation mail.
CREATE TABLE IF NOT EXISTS handoffs (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    subject_ref TEXT NOT NULL,
    intent TEXT NOT NULL CHECK (intent IN ('park', 'escalate')),
    notes TEXT NOT NULL,
    priority TEXT NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    priority_rank INTEGER NOT NULL,
    snapshot JSONB NOT NULL,
    created_by TEXT NOT NULL REFERENCES users(id),
    created_at TIMESTAMPTZ NOT NULL,
    claimed_by TEXT REFERENCES users(id),
    claimed_at TIMESTAMPTZ,
    cancelled_by TEXT REFERENCES users(id),
    cancelled_at TIMESTAMPTZ,
    status TEXT NOT NULL CHECK (status IN ('open', 'claimed', 'cancelled')),
    assessment JSONB,
    -- none: no assessor; pending: an assessor should run; running; done; failed
    assessment_state TEXT NOT NULL DEFAULT 'none',
    -- none: nothing to mail (park); pending: escalation mail not queued yet; queued: it is
    mail_state TEXT NOT NULL DEFAULT 'none'
);
-- The queue: open handoffs of an account, urgent first then oldest (ids are time-ordered).
CREATE INDEX IF NOT EXISTS handoffs_queue ON handoffs(account_id, priority_rank DESC, id) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS handoffs_mail_pending ON handoffs(id) WHERE mail_state = 'pending';
CREATE INDEX IF NOT EXISTS handoffs_assessment_pending ON handoffs(id) WHERE assessment_state = 'pending';

-- One row per account: the last sequence number handed out. Taking the next one updates this
-- row, which holds its lock until the transaction ends, so an account's events commit in
-- sequence order and a rolled-back transaction leaves no gap.
CREATE TABLE IF NOT EXISTS handoff_seq (
    account_id TEXT PRIMARY KEY REFERENCES accounts(id),
    last_seq BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS handoff_events (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    handoff_id TEXT NOT NULL,
    handoff JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (account_id, seq)
);
CREATE INDEX IF NOT EXISTS handoff_events_created ON handoff_events(created_at);

CREATE TABLE IF NOT EXISTS handoff_notifications (
    handoff_id TEXT NOT NULL REFERENCES handoffs(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    channel TEXT NOT NULL,
    outbox_id TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (handoff_id, user_id, channel)
);
