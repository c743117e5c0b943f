-- The mailer claims queued rows in (next_attempt_at, id) order. A digest tick queues thousands of
-- rows with one next_attempt_at, and an index on next_attempt_at alone made every claim sort all
-- of those ties again (31 ms per claim of 100 at 20,000 queued, so a drain grew with its square).
CREATE INDEX IF NOT EXISTS outbox_queued_order ON outbox(next_attempt_at, id) WHERE status = 'queued';
DROP INDEX IF EXISTS outbox_queued;
