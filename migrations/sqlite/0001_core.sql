-- Core schema of smart-task on SQLite. Times are unix milliseconds (INTEGER) and JSON is TEXT, so the same
-- Rust types and most SQL serve the PostgreSQL backend too.

-- Requests and their queue state. A request is claimable when it is not closed, not parked and
-- available_at <= now; a claim moves available_at to the lease expiry, so an expired lease makes the row
-- claimable again (takeover) without a separate reaper.
CREATE TABLE requests (
    id                 INTEGER PRIMARY KEY,
    protocollo         TEXT    NOT NULL UNIQUE,
    task               TEXT    NOT NULL,
    stato              TEXT    NOT NULL CHECK (stato IN ('aperta', 'in_carico', 'chiusa')),
    esito              TEXT    CHECK (esito IN ('accolta', 'non_accolta', 'annullata')),
    soggetto           TEXT    NOT NULL,           -- subject key: matricola, else the first codice fiscale
    sede               TEXT    NOT NULL,           -- competent sede (4 digits)
    payload            TEXT    NOT NULL,           -- the request as submitted, JSON
    chiave_idempotenza TEXT    UNIQUE,
    creata_il          INTEGER NOT NULL,
    aggiornata_il      INTEGER NOT NULL,
    chiusa_il          INTEGER,
    available_at       INTEGER NOT NULL,
    claims             INTEGER NOT NULL DEFAULT 0, -- number of claims so far; the current one is the fencing token
    lease_token        INTEGER,                    -- = claims while leased, NULL otherwise
    lease_owner        TEXT,
    failures           INTEGER NOT NULL DEFAULT 0, -- rule failures (error, timeout, budget) so far
    parked             TEXT    CHECK (parked IN ('rinvio', 'errore')), -- waiting for an operator
    assegnata_sede     TEXT,
    last_error         TEXT
);
CREATE INDEX requests_claimable ON requests (available_at, id) WHERE stato <> 'chiusa' AND parked IS NULL;
CREATE INDEX requests_task_soggetto ON requests (task, soggetto) WHERE stato <> 'chiusa';
CREATE INDEX requests_soggetto ON requests (soggetto, creata_il);

-- The history ("storico") of each request: append-only.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL REFERENCES requests (id),
    kind       TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    detail     TEXT
);
CREATE INDEX events_request ON events (request_id, id);

-- Every decision a rule (or an operator) made on a request, with what it read.
CREATE TABLE decisions (
    id           INTEGER PRIMARY KEY,
    request_id   INTEGER NOT NULL REFERENCES requests (id),
    outcome      TEXT    NOT NULL CHECK (outcome IN ('accolta', 'non_accolta', 'rinvio')),
    reasons      TEXT    NOT NULL, -- JSON [{codice, messaggio}]
    effects      TEXT    NOT NULL, -- JSON [{tipo, ...}]
    rule_version TEXT    NOT NULL,
    trace        TEXT    NOT NULL, -- JSON {checks, facts, operations}
    decided_at   INTEGER NOT NULL,
    duration_us  INTEGER NOT NULL
);
CREATE INDEX decisions_request ON decisions (request_id);

-- Notification outbox: written in the transaction of the event that causes it, sent by the dispatcher.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY,
    request_id   INTEGER NOT NULL REFERENCES requests (id),
    event_id     INTEGER NOT NULL REFERENCES events (id),
    event        TEXT    NOT NULL,
    channel      TEXT    NOT NULL CHECK (channel IN ('email', 'sms')),
    recipient    TEXT    NOT NULL,
    role         TEXT    NOT NULL, -- richiedente | controparte
    state        TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    lease_token  INTEGER,
    sent_at      INTEGER,
    last_error   TEXT,
    UNIQUE (event_id, channel, recipient)
);
CREATE INDEX outbox_due ON outbox (available_at, id) WHERE state = 'pending';

-- Protocol numbers: one progressive per sede and year.
CREATE TABLE protocol_counters (
    sede TEXT    NOT NULL,
    anno INTEGER NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (sede, anno)
);

-- Optimistic concurrency for decisions: every fact read is recorded with the version of its subject; any
-- change to a subject (import, effect, a request opening or closing) bumps it.
CREATE TABLE subject_versions (
    subject TEXT    PRIMARY KEY,
    version INTEGER NOT NULL
);

-- Reference data (domain.md §9.4).
CREATE TABLE sedi (
    codice        TEXT PRIMARY KEY,
    denominazione TEXT NOT NULL,
    provincia     TEXT NOT NULL,
    email         TEXT NOT NULL
);
CREATE TABLE aziende (
    matricola             TEXT PRIMARY KEY,
    cf                    TEXT NOT NULL,
    ragione_sociale       TEXT NOT NULL,
    sede                  TEXT NOT NULL REFERENCES sedi (codice),
    pec_registro_imprese  TEXT,
    rappresentanti_legali TEXT NOT NULL -- JSON array of codici fiscali
);
CREATE TABLE persone (
    cf      TEXT PRIMARY KEY,
    nome    TEXT NOT NULL,
    cognome TEXT NOT NULL
);
CREATE TABLE intermediari (
    cf        TEXT PRIMARY KEY,
    categoria TEXT NOT NULL,
    albo      TEXT
);
CREATE TABLE deleghe (
    id           TEXT PRIMARY KEY,
    matricola    TEXT NOT NULL,
    delegato_cf  TEXT NOT NULL,
    tipo         TEXT NOT NULL CHECK (tipo IN ('INTERMEDIARIO', 'DIPENDENTE', 'SUBDELEGA')),
    stato        TEXT NOT NULL CHECK (stato IN ('ATTIVA', 'REVOCATA', 'SCADUTA')),
    data_inizio  TEXT NOT NULL,
    data_fine    TEXT,
    data_revoca  TEXT,
    padre        TEXT REFERENCES deleghe (id),
    revocata_da  INTEGER REFERENCES requests (id)
);
CREATE INDEX deleghe_matricola ON deleghe (matricola);
CREATE INDEX deleghe_delegato ON deleghe (delegato_cf);
CREATE INDEX deleghe_padre ON deleghe (padre);
CREATE TABLE contatti (
    id          TEXT PRIMARY KEY,
    titolare_cf TEXT NOT NULL,
    matricola   TEXT,
    tipo        TEXT NOT NULL CHECK (tipo IN ('EMAIL', 'PEC', 'CELLULARE', 'TELEFONO')),
    valore      TEXT NOT NULL,
    uso         TEXT NOT NULL, -- JSON array
    stato       TEXT NOT NULL CHECK (stato IN ('VALIDO', 'ANOMALO', 'DISABILITATO')),
    anomalia    TEXT,
    valid_from  TEXT,
    valid_to    TEXT
);
CREATE INDEX contatti_titolare ON contatti (titolare_cf);
CREATE INDEX contatti_matricola ON contatti (matricola);
