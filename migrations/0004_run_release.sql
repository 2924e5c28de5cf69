-- The CSM release each run follows, recorded with the run: the JSON of what GET /services shows
-- as `csm_release` (release, `configured` or `detected`, runbook page, etcd layout, evidence).
-- NULL for runs created before this migration.
ALTER TABLE runs ADD COLUMN csm_release TEXT;
