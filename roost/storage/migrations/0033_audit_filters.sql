-- Issue 20: the console's audit page filters by who acted and by target, newest first, paged by id.
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log(actor, id);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log(target_id, id);
CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log(action, id);
