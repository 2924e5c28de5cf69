-- Runs, their per-service tasks, the steps of each task, and an append-only event log.
-- Times are RFC 3339 UTC text; ids are UUIDv7 text (lexicographic order = creation order).

CREATE TABLE runs (
    id              TEXT PRIMARY KEY NOT NULL,
    state           TEXT NOT NULL,
    reason          TEXT,
    dry_run         INTEGER NOT NULL DEFAULT 0,
    requested_by    TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    request_hash    TEXT,
    attempt         INTEGER NOT NULL DEFAULT 1,
    message         TEXT,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT
);
CREATE INDEX runs_by_state ON runs (state, id);

CREATE TABLE tasks (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    service     TEXT NOT NULL,
    state       TEXT NOT NULL,
    message     TEXT,
    attempt     INTEGER NOT NULL DEFAULT 0,
    started_at  TEXT,
    finished_at TEXT,
    PRIMARY KEY (run_id, service)
);
CREATE INDEX tasks_by_service ON tasks (service, run_id);

CREATE TABLE steps (
    run_id      TEXT NOT NULL,
    service     TEXT NOT NULL,
    ordinal     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    -- what the step does, as planned when the run was created (so a resume follows the same plan)
    spec        TEXT NOT NULL,
    state       TEXT NOT NULL,
    message     TEXT,
    -- what the step saw or saved (e.g. a sanitized manifest, stored before anything is deleted)
    data        TEXT,
    started_at  TEXT,
    finished_at TEXT,
    PRIMARY KEY (run_id, service, ordinal),
    FOREIGN KEY (run_id, service) REFERENCES tasks (run_id, service) ON DELETE CASCADE
);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    at      TEXT NOT NULL,
    level   TEXT NOT NULL,
    service TEXT,
    step    TEXT,
    message TEXT NOT NULL
);
CREATE INDEX events_by_run ON events (run_id, id);
