-- Scale-out (issue 9): one row per running `roost serve`, upserted by its heartbeat actor,
-- deleted on a clean stop, pruned when silent for ten heartbeats.
CREATE TABLE IF NOT EXISTS processes (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    port INTEGER,
    started_at TIMESTAMPTZ NOT NULL,
    last_heartbeat TIMESTAMPTZ NOT NULL,
    sockets INTEGER NOT NULL DEFAULT 0,
    -- the singletons it leads, a JSON list of names
    leads JSONB NOT NULL
);
