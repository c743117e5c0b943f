-- Issue 20 (console, scouts and devices pages).
-- A scout's items of every status, page by page in id order. Without this the unfiltered list
-- (GET /api/admin/scouts/{id}/items, the console's scout page) sorted every item of the scout, or
-- walked the whole table in id order, for one page.
CREATE INDEX IF NOT EXISTS scout_items_scout_id ON scout_items(scout_id, id);
-- The console's devices page: the devices seen most recently.
CREATE INDEX IF NOT EXISTS devices_last_seen ON devices(last_seen_at);
-- Which devices hold a socket in which process (PostgreSQL, several processes): each process's
-- heartbeat writes what changed in its socket registry since its last beat (and all of it now and
-- then); rows of a process go with its row in the process table.
CREATE TABLE IF NOT EXISTS process_devices (
    process_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sockets INTEGER NOT NULL,
    PRIMARY KEY (process_id, device_id)
);
CREATE INDEX IF NOT EXISTS process_devices_device ON process_devices(device_id);
