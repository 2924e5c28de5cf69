-- Restore drills (see `crate::drills`): a backup of an etcd cluster restored into a scratch etcd
-- served by a real `etcd`, its keys counted by what each service keeps and compared with the
-- live cluster's. A table of their own rather than rows of `backup_checks` (whose 0006 comment
-- foresaw kind 'drill'): a drill is a job with a life (running, then passed, failed, error,
-- cancelled or interrupted), of a cluster, started by someone or by the schedule, possibly of
-- no backup at all (none found); its integrity check is still remembered in `backup_checks` as
-- every check is.
--
-- A row is written when the drill starts (`running`) and updated once when it ends; a row
-- still `running` at start was cut short by a crash and is marked `interrupted`.
CREATE TABLE drills (
    -- UUIDv7: sorts by start.
    id TEXT PRIMARY KEY NOT NULL,
    cluster TEXT NOT NULL,
    -- Our service (`bss`) or the CSM service of a cluster this tool does not repopulate.
    service TEXT NOT NULL,
    -- `bitnami` or `etcd-operator`.
    layout TEXT NOT NULL,
    -- `api` or `schedule`.
    trigger TEXT NOT NULL,
    -- Who asked for it (the caller's name), for `api`.
    requested_by TEXT,
    -- The backup drilled and the copy read (as `backup_checks` names a copy); NULL when the
    -- cluster had no backup to drill.
    backup TEXT,
    location TEXT,
    size INTEGER,
    -- RFC 3339, nanoseconds, UTC: compared as text.
    last_modified TEXT,
    state TEXT NOT NULL CHECK (state IN
        ('running', 'passed', 'failed', 'error', 'cancelled', 'interrupted')),
    started_at TEXT NOT NULL,
    finished_at TEXT,
    -- What was found, or why it failed, in one line.
    detail TEXT NOT NULL DEFAULT '',
    backup_revision INTEGER,
    live_revision INTEGER,
    backup_age_seconds INTEGER,
    -- How long `etcdutl snapshot restore` took.
    restore_seconds REAL,
    -- JSON: the whole report (integrity, restore, the scratch etcd, the counts by data compared
    -- with the live cluster, the problems).
    report TEXT
);
CREATE INDEX drills_by_cluster ON drills (cluster, id);
CREATE INDEX drills_by_copy ON drills (location, size, last_modified, id);
