-- Durability: each queued deletion is retried on its own. A replica is
-- removed no sooner than the grace period after the commit that released it
-- (created_at; the period is the gateway's gc_delay), so reads in progress
-- finish; `not_before` (ms) holds it back further: while a gateway works on
-- it (its claim), and after a failed attempt (a back-off that grows with
-- `attempts`), so a node that is down delays only its own replicas.
ALTER TABLE garbage ADD COLUMN not_before BIGINT NOT NULL DEFAULT 0;
ALTER TABLE garbage ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE garbage ADD COLUMN last_error TEXT;
CREATE INDEX garbage_due ON garbage (not_before);
