-- The change feed's order. Event ids come from a sequence, reserved inside their transactions, so several
-- instances commit them out of order: a reader that had passed id 101 would never see a 100 committed later.
-- Each event carries the id of the transaction that wrote it; the feed is ordered by (tx, id) and shows only
-- events of transactions older than every one still in flight (the snapshot's xmin), so a row that becomes
-- visible later always sorts after everything already shown. Rows written before this migration keep 0.
ALTER TABLE events ADD COLUMN tx BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ALTER COLUMN tx SET DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX events_feed ON events (tx, id);
