-- Issue 20, console search: prefix and equality matches read an index range, never a table scan.
-- SQLite compares TEXT in byte order (BINARY) and its lower() folds ASCII only, as the PostgreSQL
-- version's lower(x COLLATE "C") does, so the two backends find the same rows. Each index ends in
-- id, the order results come out in.
CREATE INDEX IF NOT EXISTS scout_items_ref_search ON scout_items (source_msg_ref, id);
CREATE INDEX IF NOT EXISTS scout_items_subject_search ON scout_items (lower(raw_subject), id);
CREATE INDEX IF NOT EXISTS scout_items_sender_search ON scout_items (lower(sender), id);
CREATE INDEX IF NOT EXISTS outbox_subject_search ON outbox (lower(subject), id);
CREATE INDEX IF NOT EXISTS outbox_to_search ON outbox (lower(to_addr), id);
CREATE INDEX IF NOT EXISTS outbox_recipient_search ON outbox (recipient_user_id, id);
CREATE INDEX IF NOT EXISTS outbox_status_search ON outbox (status, id);
CREATE INDEX IF NOT EXISTS handoffs_ref_search ON handoffs (subject_ref, id);
CREATE INDEX IF NOT EXISTS outreach_items_to_search ON outreach_items (lower(to_handle), id);
