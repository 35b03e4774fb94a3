-- Small named values the daemon keeps across restarts (the replay cursor, the applied
-- config revision's files).
CREATE TABLE daemon_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
