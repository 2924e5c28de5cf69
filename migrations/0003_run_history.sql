-- The history served from stored documents: a finished run does not change (until a resume
-- makes it pending again, which clears both), so its list entry and its full view are written
-- once, when it finishes, and read back as they are.

-- The run's entry in `GET /repopulations` (JSON): id, state, services with their states, ...
ALTER TABLE runs ADD COLUMN summary TEXT;

-- The run as `GET /repopulations/{id}` shows it (JSON), with every step and its data.
-- `format` is the version of the views both documents were written in: a service whose views
-- changed writes them again, at start, for every run stored in another format.
CREATE TABLE run_documents (
    run_id   TEXT PRIMARY KEY NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    format   INTEGER NOT NULL,
    document TEXT NOT NULL
);

-- What a step did in an earlier attempt of its run, kept when a resume runs it again.
-- `data_summary` is a short JSON outline of the data the step had stored (the data itself stays
-- on the step, where the next attempt finds it).
CREATE TABLE step_attempts (
    run_id       TEXT NOT NULL,
    service      TEXT NOT NULL,
    ordinal      INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    state        TEXT NOT NULL,
    message      TEXT,
    data_summary TEXT,
    started_at   TEXT,
    finished_at  TEXT,
    PRIMARY KEY (run_id, service, ordinal, attempt),
    FOREIGN KEY (run_id, service, ordinal) REFERENCES steps (run_id, service, ordinal)
        ON DELETE CASCADE
);
