-- Cron jobs: the next scheduled instant of each job, kept in the database so that a restart neither skips
-- nor repeats a run (a run missed while the daemon was down is made up once), and so that one instance
-- only runs each instant (the claim is a compare-and-set on next_run_at).
CREATE TABLE cron_jobs (
    name            TEXT    PRIMARY KEY,
    next_run_at     BIGINT NOT NULL,
    last_run_at     BIGINT,
    last_success_at BIGINT,
    last_error      TEXT
);
