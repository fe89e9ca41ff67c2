-- The source of every rule version ever activated (task.yaml, rule.rhai, a shadow candidate, the shared library),
-- by version: a restart whose rules directory is refused runs the last activated set from here, and `explain`
-- quotes the lines of any past decision's version. Written once per version (content-addressed), never changed.
CREATE TABLE rule_sources (
    version     TEXT    PRIMARY KEY,  -- the task version recorded with decisions (16 hex of SHA-256)
    task        TEXT    NOT NULL,
    files       TEXT    NOT NULL,     -- JSON {relative path: text}
    recorded_at BIGINT NOT NULL
);
