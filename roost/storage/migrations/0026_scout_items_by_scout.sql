-- Issue 20 (console): a scout's items of every status, newest page by page, in id order. Without
-- this the unfiltered list (GET /api/admin/scouts/{id}/items, the console's scout page) sorted
-- every item of the scout, or walked the whole table in id order, for one page.
CREATE INDEX IF NOT EXISTS scout_items_scout_id ON scout_items(scout_id, id);
-- The console's devices page: the devices seen most recently.
CREATE INDEX IF NOT EXISTS devices_last_seen ON devices(last_seen_at);
