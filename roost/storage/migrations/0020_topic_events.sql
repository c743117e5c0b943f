-- Issue 19: topics and watchers.
-- A topic event notifies every watcher of the topic: the fan-out reads watches by topic.
CREATE INDEX IF NOT EXISTS watches_topic ON watches(topic, user_id);

-- Idempotency keys of topic events (only events sent with a key are recorded): a repeat of a key
-- in the actor's account answers the first event's answer instead of notifying anyone again.
-- fingerprint: a hash of the request that used the key, so a different request with the same key
-- is refused. notified: how many notifications the first event made (written in its transaction).
CREATE TABLE IF NOT EXISTS topic_event_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    idempotency_key TEXT NOT NULL,
    topic TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    notified INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (account_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS topic_event_keys_created ON topic_event_keys(created_at);

-- Which notification an outbox message e-mails (personal-direct mail), so a message that fails for
-- good un-marks its notification as e-mailed in the same transaction and the digest can carry it.
CREATE TABLE IF NOT EXISTS notification_mails (
    outbox_id TEXT PRIMARY KEY REFERENCES outbox(id),
    notification_id TEXT NOT NULL REFERENCES notifications(id)
);
