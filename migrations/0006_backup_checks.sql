-- Checks of the etcd clusters' backups: whether a copy of a backup (a file in the snapshotter
-- directory, or an object in S3) is an etcd snapshot that restores, and what it holds.
--
-- A copy is its location (the path, or the S3 URL: either names the cluster or the service),
-- its size and its modification time: a backup replaced under the same name is another copy,
-- unchecked until it is checked again. Each check is a row (the newest per copy is the one
-- that counts; older ones are pruned). `kind` is 'check' for the checks before a restore and
-- on demand; restore drills (which restore a backup into a scratch etcd) store theirs here too
-- as 'drill', with their report in `facts`.
CREATE TABLE backup_checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    location TEXT NOT NULL,
    backup TEXT NOT NULL,
    size INTEGER NOT NULL,
    -- RFC 3339, nanoseconds, UTC: compared as text.
    last_modified TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'check',
    checked_at TEXT NOT NULL,
    ok INTEGER NOT NULL CHECK (ok IN (0, 1)),
    -- The snapshot's revision and live keys, when it could be read.
    revision INTEGER,
    keys INTEGER,
    -- What it holds, or what is wrong with it.
    detail TEXT NOT NULL,
    -- How it was checked (read; restored by which tool and version).
    how TEXT NOT NULL,
    -- JSON: everything the check found (per-prefix key counts, buckets, hash), or a drill's report.
    facts TEXT
);
CREATE INDEX backup_checks_by_copy ON backup_checks (location, size, last_modified, kind, id);
