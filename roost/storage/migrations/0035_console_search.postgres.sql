-- Issue 20, console search: prefix and equality matches read an index range, never a table scan.
-- Every text index is in byte order (COLLATE "C"), so a prefix is one range [p, p') whatever the
-- database's collation; lower() over a "C" value folds ASCII only, as SQLite's lower() does, so the
-- two backends find the same rows. Each index ends in id, the order results come out in.
CREATE INDEX IF NOT EXISTS scout_items_ref_search ON scout_items ((source_msg_ref COLLATE "C"), id);
CREATE INDEX IF NOT EXISTS scout_items_subject_search ON scout_items ((lower(raw_subject COLLATE "C")), id);
CREATE INDEX IF NOT EXISTS scout_items_sender_search ON scout_items ((lower(sender COLLATE "C")), id);
CREATE INDEX IF NOT EXISTS outbox_subject_search ON outbox ((lower(subject COLLATE "C")), id);
CREATE INDEX IF NOT EXISTS outbox_to_search ON outbox ((lower(to_addr COLLATE "C")), id);
CREATE INDEX IF NOT EXISTS outbox_recipient_search ON outbox (recipient_user_id, id);
CREATE INDEX IF NOT EXISTS outbox_status_search ON outbox (status, id);
CREATE INDEX IF NOT EXISTS handoffs_ref_search ON handoffs ((subject_ref COLLATE "C"), id);
CREATE INDEX IF NOT EXISTS outreach_items_to_search ON outreach_items ((lower(to_handle COLLATE "C")), id);
