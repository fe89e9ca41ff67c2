-- The satisfaction questionnaire (issue 16): anonymous by construction. An invitation holds only the SHA-256 of
-- its one-time token, the task type, the requester's category, the month of the close and its expiry; no
-- request, requester, outbox or event column, and a random key rather than a sequence. Answering deletes the
-- invitation and inserts the answer set in one transaction; an answer set holds the same three coordinates and
-- the answers, again under a random key, so nothing orders or joins it to an invitation or a request.
CREATE TABLE questionnaire_invitations (
    token_sha256 TEXT    PRIMARY KEY,    -- hex SHA-256 of the token (the token itself is never stored)
    task         TEXT    NOT NULL,
    categoria    TEXT    NOT NULL,
    mese         TEXT    NOT NULL,       -- YYYY-MM of the close, in the configured zone
    expires_day  TEXT    NOT NULL        -- YYYY-MM-DD: the last day the link is accepted (no finer time)
);

CREATE TABLE questionnaire_answers (
    id        TEXT PRIMARY KEY,          -- random (128 bits, hex): no insertion order
    task      TEXT NOT NULL,
    categoria TEXT NOT NULL,
    mese      TEXT NOT NULL,             -- YYYY-MM
    risposte  TEXT NOT NULL              -- JSON {question id: value}
);
CREATE INDEX questionnaire_answers_group ON questionnaire_answers (task, categoria, mese);
