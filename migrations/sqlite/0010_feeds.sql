-- The change feed's order. On SQLite one writer commits at a time, so event ids are already in commit order
-- and `tx` stays 0: the feed is ordered by (tx, id), which is id order here.
ALTER TABLE events ADD COLUMN tx BIGINT NOT NULL DEFAULT 0;
CREATE INDEX events_feed ON events (tx, id);
