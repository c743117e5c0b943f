-- An escalation's assessment mail is marked pending in the transaction that stores the assessment
-- and cleared in the one that queues the mail (or by the escalation mail, when that carried the
-- assessment). Before, the mail was queued after the assessment's commit with no mark: a crash in
-- between lost it. The follow-ups pass picks up marks left by a crash.
ALTER TABLE handoffs ADD COLUMN IF NOT EXISTS assessment_mail_state TEXT NOT NULL DEFAULT 'none';
CREATE INDEX IF NOT EXISTS handoffs_assessment_mail_pending ON handoffs (id) WHERE assessment_mail_state = 'pending';
