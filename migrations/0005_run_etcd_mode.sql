-- What a run does with the etcd clusters of its services (POST /repopulations `etcd`, `backup`,
-- `confirm`): the mode (check, restore, rebuild, auto), the backup a restore was asked to use
-- (NULL: the newest), and the JSON list of the etcd clusters the request confirmed the run may
-- rebuild or restore. Runs created before this migration were all `check`.
ALTER TABLE runs ADD COLUMN etcd_mode TEXT NOT NULL DEFAULT 'check';
ALTER TABLE runs ADD COLUMN etcd_backup TEXT;
ALTER TABLE runs ADD COLUMN etcd_confirm TEXT NOT NULL DEFAULT '[]';
