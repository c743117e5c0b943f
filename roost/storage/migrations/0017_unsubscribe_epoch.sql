-- Issue 17: each user's unsubscribe epoch, part of every unsubscribe link and bumped when the user's
-- digest is turned back on, so a link mailed before a re-subscribe no longer unsubscribes them.
-- A table of its own rather than ALTER TABLE users (as 0004's digest_schedule), so the script can be
-- re-run: SQLite has no ADD COLUMN IF NOT EXISTS. No row means epoch 0.
CREATE TABLE IF NOT EXISTS unsubscribe_epochs (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    epoch INTEGER NOT NULL
);
