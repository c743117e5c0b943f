-- Issue 17: a per-user epoch in unsubscribe links, bumped when the user's digest is turned back on,
-- so a link from before the re-subscribe no longer unsubscribes them.
ALTER TABLE users ADD COLUMN unsubscribe_epoch INTEGER NOT NULL DEFAULT 0;
