-- Attachments of requests (and of the requester's messages to the sede): the bytes once per content, keyed by
-- their SHA-256, in the database itself, so that a submission with its files is one transaction and a backup
-- of the database is a backup of everything (see ARCHITECTURE.md, "Attachments"). The names clients gave are
-- metadata only: nothing is ever written to a path built from them.
CREATE TABLE attachment_contents (
    sha256  TEXT    PRIMARY KEY,
    size    INTEGER NOT NULL,
    content BLOB    NOT NULL
);
CREATE TABLE attachments (
    id         INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL REFERENCES requests (id),
    event_id   INTEGER REFERENCES events (id), -- the message they came with; NULL: the request's own
    posizione  INTEGER NOT NULL,               -- 1, 2, … within the request, in the order received
    nome       TEXT    NOT NULL,
    tipo       TEXT    NOT NULL,               -- the type read from the content (application/pdf, …)
    size       INTEGER NOT NULL,
    sha256     TEXT    NOT NULL REFERENCES attachment_contents (sha256),
    at         INTEGER NOT NULL,
    UNIQUE (request_id, posizione)
);
CREATE INDEX attachments_content ON attachments (sha256);
