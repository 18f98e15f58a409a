-- Durability II, seen from outside: each node's audit findings in its last
-- complete scrub pass (audits, failures, and when the pass ended; the
-- current pass's are window_audits and window_failures), and counters
-- every gateway adds to, such as the copies and bytes repair wrote, for
-- `tenfold status`.
ALTER TABLE nodes ADD COLUMN last_pass_audits BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN last_pass_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN last_pass_end BIGINT;
CREATE TABLE counters (
    name   TEXT    PRIMARY KEY,
    value  BIGINT  NOT NULL
);
