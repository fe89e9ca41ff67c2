-- Promoted rule sets (`rules promote`): a candidate rules directory vetted by every gate (compile, lint, cases,
-- reason-code coverage, a replay over recent decisions) and recorded with its files, its author and why, its
-- diff against the set active when it was vetted, and the gates' results. At most one is active; the daemons
-- of every instance run it (rules.activation: promoted). Rows are never deleted: every version ever activated
-- stays readable.
CREATE TABLE rule_sets (
    id           INTEGER PRIMARY KEY,   -- the version number people name: 1, 2, 3…
    digest       TEXT    NOT NULL,      -- SHA-256 of the files (paths and texts)
    files        TEXT    NOT NULL,      -- JSON {relative path: text}
    tasks        TEXT    NOT NULL,      -- JSON {task: task version}; {} when it did not compile
    author       TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    diff         TEXT    NOT NULL,      -- unified diff against `based_on`'s files
    results      TEXT    NOT NULL,      -- JSON: every gate, passed or not, with its details
    state        TEXT    NOT NULL CHECK (state IN ('awaiting_approval', 'active', 'retired', 'refused', 'superseded')),
    based_on     INTEGER REFERENCES rule_sets (id),  -- the active set when it was vetted
    submitted_at INTEGER NOT NULL,
    approved_by  TEXT,
    approved_at  INTEGER,
    activated_at INTEGER,
    retired_at   INTEGER
);
CREATE UNIQUE INDEX rule_sets_one_active ON rule_sets (state) WHERE state = 'active';

-- The promoted set each instance runs (NULL: a rules directory, rules.activation: directory).
ALTER TABLE rule_status ADD COLUMN rule_set INTEGER;
