-- The log of the master-data changes accepted requests made (a delega revoked, a contact archived, disabled
-- or added), written in the closing transaction, for the archives' feed (`GET /effetti`): the master copy
-- follows what the daemon changed. Ordered like the events feed by (writing transaction, id): see 0010.
CREATE TABLE applied_effects (
    id         BIGSERIAL PRIMARY KEY,
    tx         BIGINT  NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    request_id BIGINT  NOT NULL REFERENCES requests (id),
    kind       TEXT    NOT NULL
               CHECK (kind IN ('revoca_delega', 'archiviazione_contatto', 'disabilitazione_contatto', 'nuovo_contatto')),
    entity     TEXT    NOT NULL, -- the delega's or the contact's id
    detail     TEXT    NOT NULL, -- JSON: what changed
    at         BIGINT  NOT NULL
);
CREATE INDEX applied_effects_feed ON applied_effects (tx, id);
CREATE INDEX applied_effects_request ON applied_effects (request_id);
