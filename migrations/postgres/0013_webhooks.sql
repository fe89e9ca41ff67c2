-- Webhooks: an integrator's subscriptions, each with its own cursor over the event feed (the events table is
-- the outbox: its rows are written in the change's transaction, so no fan-out rows are needed), its attempts
-- on the next event and a lease (owner, expiry, fencing token) so that one instance at a time delivers it.
CREATE TABLE webhook_subscriptions (
    id              TEXT PRIMARY KEY,
    integrator      TEXT NOT NULL,
    url             TEXT NOT NULL,
    descrizione     TEXT,
    secret          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    cursor_tx       BIGINT NOT NULL,
    cursor_id       BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    last_status     BIGINT,
    lease_owner     TEXT,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    lease_token     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX webhook_subscriptions_integrator ON webhook_subscriptions (integrator, created_at);
-- Events a subscription gave up on after `webhooks.max_attempts`: ids, attempts and the last HTTP status
-- only (0: no answer). Never the receiver's response body, which may quote personal data.
CREATE TABLE webhook_dead_letters (
    subscription_id TEXT NOT NULL,
    event_id        BIGINT NOT NULL,
    attempts        BIGINT NOT NULL,
    last_status     BIGINT NOT NULL,
    at              BIGINT NOT NULL,
    PRIMARY KEY (subscription_id, event_id)
);
