-- Snapshots of CSM data that lives only in an etcd cluster (BOS session templates, HMNFD
-- subscriptions), captured while the system is healthy so a rebuild can restore from them.
-- `content` is the JSON as read from the service with secret-looking keys removed; `redacted`
-- lists the JSON paths of what was removed (never the values).

CREATE TABLE snapshots (
    id       TEXT PRIMARY KEY NOT NULL,  -- UUIDv7: lexicographic order = capture order
    taken_at TEXT NOT NULL,
    source   TEXT NOT NULL,
    items    INTEGER NOT NULL,
    redacted TEXT NOT NULL,
    content  TEXT NOT NULL
);
CREATE INDEX snapshots_by_source ON snapshots (source, id);
