-- Whether the current claim took the request over from a worker whose lease expired (for the history and
-- the logs); computed by the claim statement from the previous lease.
ALTER TABLE requests ADD COLUMN taken_over BIGINT NOT NULL DEFAULT 0;
