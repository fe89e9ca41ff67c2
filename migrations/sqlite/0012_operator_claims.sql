-- Presa in carico: a request waiting for an operator (referred or parked) may be held by one operator of its
-- sede, who then works it; the others see who holds it. Kept apart from the lease columns, which fence a
-- close for a minute: an assignment lasts until its holder releases it or the request leaves the queue.
ALTER TABLE requests ADD COLUMN assegnata_a TEXT;
ALTER TABLE requests ADD COLUMN assegnata_il INTEGER;

-- The `jti` of every bearer token used (AgID ID_AUTH_REST_02, when `api.auth.jti_replay` is on), until its
-- `exp` (unix seconds): a second use is refused by the primary key, so every instance sharing the database
-- refuses it. Expired rows are purged now and then by the insert path itself.
CREATE TABLE jti_seen (
    jti        TEXT    PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX jti_seen_expires ON jti_seen (expires_at);
