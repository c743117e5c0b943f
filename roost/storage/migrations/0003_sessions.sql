-- Session pipeline: what each processor has done with each session file, and the usage processor's messages.

-- One row per (processor, file): the file as it was when last processed (size, mtime_ns), how far its
-- complete lines were handed to the processor (processed_bytes; a trailing partial line stays after it),
-- the hash of the whole content when it was last read in full (NULL after an incremental run), and a probe
-- hash over a bounded head and tail window, used to check that the processed prefix is unchanged.
CREATE TABLE IF NOT EXISTS session_processor_state (
    processor_name TEXT NOT NULL,
    session_file TEXT NOT NULL,
    username TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    processed_bytes BIGINT NOT NULL,
    content_hash TEXT,
    probe_hash TEXT NOT NULL,
    items_extracted BIGINT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (processor_name, session_file)
);

-- One row per API message per user, keyed by (message.id, requestId); each counter is the largest value
-- seen on any of its lines, in any file or run. day/model come from the message's earliest line.
CREATE TABLE IF NOT EXISTS usage_messages (
    username TEXT NOT NULL,
    message_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    day TEXT NOT NULL,
    model TEXT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_creation_input_tokens BIGINT NOT NULL,
    cache_read_input_tokens BIGINT NOT NULL,
    PRIMARY KEY (username, message_id, request_id)
);
CREATE INDEX IF NOT EXISTS usage_messages_day ON usage_messages(day, username, model);
