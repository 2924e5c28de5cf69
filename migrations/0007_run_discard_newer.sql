-- `"discard_newer": true` on POST /repopulations: the request accepts that a restore or rebuild
-- throws away what the live etcd cluster holds beyond the backup (or, for a rebuild, all of it).
-- Without it, a run that would lose such data stops before it changes anything, saying how much.
ALTER TABLE runs ADD COLUMN etcd_discard_newer INTEGER NOT NULL DEFAULT 0;
