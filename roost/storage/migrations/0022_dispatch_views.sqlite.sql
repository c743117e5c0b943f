-- Issue 19, dispatch: items carry updated_at (every write that changes an item sets it), and the
-- indexes of the new lists (a device's send queue for operators, batches by account and status).
--
-- Backfill: the latest time an item is known to have changed (its result, else its dispatch, else
-- its creation), since lease renewals were not recorded before this step.
ALTER TABLE outreach_items ADD COLUMN IF NOT EXISTS updated_at TIMESTAMPTZ;
UPDATE outreach_items SET updated_at = COALESCE(result_at, dispatched_at, created_at) WHERE updated_at IS NULL;
-- (SQLite cannot make an existing column NOT NULL: every INSERT writes updated_at.)

-- GET /api/admin/devices/{id}/send-queue: a device's items in queue order (?status= uses the claim's
-- index, outreach_items_claim).
CREATE INDEX IF NOT EXISTS outreach_items_device ON outreach_items(device_id, batch_id, seq);

-- GET /api/v1/outreach/batches?account_id=&status=: keyset pages on id under each filter.
DROP INDEX IF EXISTS outreach_batches_account;
CREATE INDEX IF NOT EXISTS outreach_batches_account_id ON outreach_batches(account_id, id);
CREATE INDEX IF NOT EXISTS outreach_batches_account_status ON outreach_batches(account_id, status, id);
CREATE INDEX IF NOT EXISTS outreach_batches_status ON outreach_batches(status, id);
