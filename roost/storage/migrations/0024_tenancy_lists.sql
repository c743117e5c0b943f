-- Issue 19: accounts and users can be deleted (a tombstone: the row stays for what refers to it, the
-- handoffs, batches and audit log, while every read of live rows leaves it out), and accounts and
-- scouts can be listed and filtered.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS deleted_at TIMESTAMPTZ;
ALTER TABLE users ADD COLUMN IF NOT EXISTS deleted_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS accounts_name ON accounts(name, id);
-- GET /api/admin/scouts?provider=&state=: every filter ends in the id order the list pages by.
CREATE INDEX IF NOT EXISTS scouts_provider ON scouts(provider, id);
CREATE INDEX IF NOT EXISTS scouts_state ON scouts(enabled, paused, id);
