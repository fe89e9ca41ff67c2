-- The notification dispatcher: outbox rows are claimed like requests, with a lease (`available_at` = lease
-- expiry, so an expired lease makes the row claimable again) and a fencing token (`lease_token` = `claims`
-- while leased). `reference` is the stable id sent with the notification (the e-mail's Message-ID, the SMS
-- gateway's order/reference field), fixed at the first claim so that a resend after a crash carries the same
-- one; `provider_id` is what the server or gateway answered (its queue id or message id).
ALTER TABLE outbox ADD COLUMN claims BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE outbox ADD COLUMN reference TEXT;
ALTER TABLE outbox ADD COLUMN provider_id TEXT;
ALTER TABLE outbox ADD COLUMN updated_at BIGINT;
-- `notifications list --dead` and `notifications retry --all-dead`.
CREATE INDEX outbox_undeliverable ON outbox (id) WHERE state IN ('failed', 'dead');
