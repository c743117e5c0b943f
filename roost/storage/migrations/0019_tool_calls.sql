-- Issue 19: the `tools` processor's rows. Each tool call once per user, keyed by its `tool_use` block's id
-- (split lines, copies in other files and rescans all repeat that id): its tool name and UTC day come from
-- the earliest line that carries it. Each failed tool result (`tool_result` with `is_error: true`) once per
-- user, keyed by the id of the call it answers; it counts against that call's day and tool when read.
-- The processor's file state is its own rows of session_processor_state (processor_name = 'tools').
CREATE TABLE IF NOT EXISTS tool_calls (
    username TEXT NOT NULL,
    tool_use_id TEXT NOT NULL,
    day TEXT NOT NULL,
    tool TEXT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (username, tool_use_id)
);
CREATE INDEX IF NOT EXISTS tool_calls_day ON tool_calls(day, username, tool);

CREATE TABLE IF NOT EXISTS tool_failures (
    username TEXT NOT NULL,
    tool_use_id TEXT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (username, tool_use_id)
);
