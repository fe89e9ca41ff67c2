-- What each daemon instance runs: the active rule versions, when they were activated, and why the last
-- candidate (if any) was refused. Written on start and on every reload; read by `rules status`.
CREATE TABLE rule_status (
    instance         TEXT    PRIMARY KEY,
    active           TEXT    NOT NULL, -- JSON {task: version}
    activated_at     BIGINT NOT NULL,
    candidate_errors TEXT,             -- JSON [text], NULL when the last candidate was activated
    checked_at       BIGINT NOT NULL
);
