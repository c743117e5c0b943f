-- Notifications, watches, the e-mail outbox and the record of digests (issue 6).
-- Each user's digest schedule, one row per user (a table of its own rather than ALTER TABLE users,
-- so the script can be re-run: SQLite has no ADD COLUMN IF NOT EXISTS).
-- next_at: the next slot as a UTC instant (NULL when cadence is off);
-- last_at: the end of the last recorded digest period (NULL before the first).
CREATE TABLE IF NOT EXISTS digest_schedule (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    next_at TIMESTAMPTZ,
    last_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS digest_schedule_next ON digest_schedule(next_at) WHERE next_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    recipient_user_id TEXT NOT NULL REFERENCES users(id),
    event_kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    actor_user_id TEXT REFERENCES users(id),
    payload JSONB NOT NULL,
    category TEXT,
    email BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL,
    read_at TIMESTAMPTZ,
    email_sent_at TIMESTAMPTZ,
    digest_included_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS notifications_recipient ON notifications(recipient_user_id, id);
-- What a digest may still pick up: unread, not e-mailed, not yet in a digest.
CREATE INDEX IF NOT EXISTS notifications_digest_pending ON notifications(recipient_user_id, created_at)
    WHERE read_at IS NULL AND email_sent_at IS NULL AND digest_included_at IS NULL;

CREATE TABLE IF NOT EXISTS watches (
    user_id TEXT NOT NULL REFERENCES users(id),
    topic TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    last_participation_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, topic)
);
CREATE INDEX IF NOT EXISTS watches_last_participation ON watches(last_participation_at);

CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    recipient_user_id TEXT REFERENCES users(id),
    to_addr TEXT NOT NULL,
    subject TEXT NOT NULL,
    text_body TEXT NOT NULL,
    html_body TEXT,
    headers JSONB NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('held', 'queued', 'sending', 'sent', 'failed')),
    hold_until TIMESTAMPTZ,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    claimed_by TEXT,
    claimed_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS outbox_queued ON outbox(next_attempt_at) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS outbox_held ON outbox(hold_until) WHERE status = 'held';
CREATE INDEX IF NOT EXISTS outbox_sending ON outbox(claimed_at) WHERE status = 'sending';

CREATE TABLE IF NOT EXISTS digests (
    id TEXT PRIMARY KEY,
    recipient_user_id TEXT NOT NULL REFERENCES users(id),
    slot_at TIMESTAMPTZ NOT NULL,
    period_start TIMESTAMPTZ NOT NULL,
    period_end TIMESTAMPTZ NOT NULL,
    notification_ids JSONB NOT NULL,
    outbox_id TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (recipient_user_id, slot_at)
);

-- Generated secrets (the unsubscribe-link key when ROOST_SECRET_KEY is unset): first writer wins.
CREATE TABLE IF NOT EXISTS app_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
