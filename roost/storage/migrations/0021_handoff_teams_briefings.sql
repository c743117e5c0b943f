-- Issue 19, handoffs: parks assessed only where the account says so, a briefing for the claimer,
-- teams on users and handoffs, and the indexes of the account's handoff list. The same SQL on both
-- dialects (SQLite's run_script emulates ADD COLUMN IF NOT EXISTS); idempotent like every step.

-- An account's setting: assess parks too (escalations always are, when an assessor is configured).
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS assess_parks BOOLEAN NOT NULL DEFAULT FALSE;

-- Optional teams: a user's, and a handoff's (the creator's unless the app names another).
ALTER TABLE users ADD COLUMN IF NOT EXISTS team TEXT;
ALTER TABLE handoffs ADD COLUMN IF NOT EXISTS team TEXT;

-- Assessment states are now pending, running, done, failed and skipped ('none' meant skipped).
UPDATE handoffs SET assessment_state = 'skipped' WHERE assessment_state = 'none';

-- The claimer's briefing: written after the claim commits, under a lease like the assessment.
-- skipped: no briefing to write (no claim yet, or the assessor writes none).
ALTER TABLE handoffs ADD COLUMN IF NOT EXISTS briefing TEXT;
ALTER TABLE handoffs ADD COLUMN IF NOT EXISTS briefing_state TEXT NOT NULL DEFAULT 'skipped';
ALTER TABLE handoffs ADD COLUMN IF NOT EXISTS briefing_lease_until TIMESTAMPTZ;
ALTER TABLE handoffs ADD COLUMN IF NOT EXISTS briefing_attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS handoffs_briefing_pending ON handoffs(id) WHERE briefing_state = 'pending';
CREATE INDEX IF NOT EXISTS handoffs_briefing_running ON handoffs(briefing_lease_until)
    WHERE briefing_state = 'running';

-- The queue scoped to a team: open handoffs of an account's team, urgent first then oldest.
CREATE INDEX IF NOT EXISTS handoffs_team_queue ON handoffs(account_id, team, priority_rank DESC, id)
    WHERE status = 'open';
-- The account's list, newest first: all of it, by state, by team (ids are time-ordered).
CREATE INDEX IF NOT EXISTS handoffs_account_list ON handoffs(account_id, id);
CREATE INDEX IF NOT EXISTS handoffs_account_status_list ON handoffs(account_id, status, id);
CREATE INDEX IF NOT EXISTS handoffs_account_team_list ON handoffs(account_id, team, id);
