-- Digest tick speed (issue 6): no index mentions digest_included_at, so marking a digest's
-- notifications included touches no index (SQLite updates only the indexes whose columns or
-- predicate columns change). The digest query bounds created_at by the user's last digest (or
-- the lookback), so rows already in a digest lie outside every range it scans.
CREATE INDEX IF NOT EXISTS notifications_digest_open ON notifications(recipient_user_id, created_at)
    WHERE read_at IS NULL AND email_sent_at IS NULL;
DROP INDEX IF EXISTS notifications_digest_pending;
-- The tick pages through due users in (next_at, user_id) order: an index in that order reads
-- each batch as one range instead of sorting every due user again for each batch.
CREATE INDEX IF NOT EXISTS digest_schedule_due ON digest_schedule(next_at, user_id) WHERE next_at IS NOT NULL;
DROP INDEX IF EXISTS digest_schedule_next;
