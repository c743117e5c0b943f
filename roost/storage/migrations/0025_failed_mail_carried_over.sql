-- Issue 19: a personal-direct notification whose mail failed for good goes into the next digest,
-- even when a digest went out between its creation and the failure (its period has passed).
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS carry_over BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX IF NOT EXISTS notifications_carry_over ON notifications(recipient_user_id)
    WHERE carry_over AND digest_included_at IS NULL;
