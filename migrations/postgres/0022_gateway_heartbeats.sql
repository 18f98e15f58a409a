-- Each gateway announces how often it renews the heartbeats of its writes
-- in progress. An orphan sweep waits at least four of the longest current
-- period before it takes a replica for an orphan, whatever its own grace
-- period, so that gateways configured with different grace periods never
-- sweep each other's writes.
CREATE TABLE gateway_heartbeats (
    owner      TEXT    PRIMARY KEY,
    period_ms  BIGINT  NOT NULL,
    until      BIGINT  NOT NULL
);
