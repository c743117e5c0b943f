-- No work left stuck (issue 16). The same SQL on both dialects (SQLite's run_script emulates
-- ADD COLUMN IF NOT EXISTS), and idempotent like every step.
--
-- 1. A handoff assessment claimed ('running') holds a lease. A process that dies while assessing
--    leaves the row 'running'; once the lease has run out any process claims it again. Attempts
--    are counted so an assessment that kills its process every time ends 'failed'.
ALTER TABLE handoffs ADD COLUMN IF NOT EXISTS assessment_lease_until TIMESTAMPTZ;
ALTER TABLE handoffs ADD COLUMN IF NOT EXISTS assessment_attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS handoffs_assessment_running ON handoffs(assessment_lease_until)
    WHERE assessment_state = 'running';

-- 2. Auto-trashed spam whose archive failed is retried with the triage backoff (attempts and the
--    next try), then recorded as failed to archive (archive_failed_at) instead of never again.
ALTER TABLE scout_items ADD COLUMN IF NOT EXISTS archive_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scout_items ADD COLUMN IF NOT EXISTS archive_next_at TIMESTAMPTZ;
ALTER TABLE scout_items ADD COLUMN IF NOT EXISTS archive_failed_at TIMESTAMPTZ;
-- Rows the old code gave up on after one failed archive: try them again on the next run.
UPDATE scout_items SET archive_attempts = 1, archive_next_at = created_at
    WHERE status = 'discarded' AND verdict = 'spam' AND archived_at IS NULL AND last_error LIKE 'archive failed:%'
    AND archive_attempts = 0 AND archive_failed_at IS NULL;
CREATE INDEX IF NOT EXISTS scout_items_archive_due ON scout_items(scout_id, archive_next_at)
    WHERE status = 'discarded' AND verdict = 'spam' AND archived_at IS NULL AND archive_failed_at IS NULL;
