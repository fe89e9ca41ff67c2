-- The log of the master-data changes accepted requests made (a delega revoked, a contact archived, disabled
-- or added), written in the closing transaction, for the archives' feed (`GET /effetti`): the master copy
-- follows what the daemon changed. On SQLite one writer commits at a time, so ids are in commit order and
-- `tx` stays 0 (see migration 0010).
CREATE TABLE applied_effects (
    id         INTEGER PRIMARY KEY,
    tx         BIGINT  NOT NULL DEFAULT 0,
    request_id INTEGER NOT NULL REFERENCES requests (id),
    kind       TEXT    NOT NULL
               CHECK (kind IN ('revoca_delega', 'archiviazione_contatto', 'disabilitazione_contatto', 'nuovo_contatto')),
    entity     TEXT    NOT NULL, -- the delega's or the contact's id
    detail     TEXT    NOT NULL, -- JSON: what changed
    at         INTEGER NOT NULL
);
CREATE INDEX applied_effects_feed ON applied_effects (tx, id);
CREATE INDEX applied_effects_request ON applied_effects (request_id);
