-- Durability II: the scrub reads every replica back and checks it, and
-- keeps each node's audit record: all time, and in the current window
-- (one scrub period), whose failure share can disqualify the node.
ALTER TABLE nodes ADD COLUMN audits BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN audit_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN window_start BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN window_audits BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN window_failures BIGINT NOT NULL DEFAULT 0;
-- Where each node's scrub is (the last replica checked, as
-- data_id/seq/idx), who runs it (one gateway at a time, until `until`),
-- when its current pass started and how many passes it completed.
CREATE TABLE node_scrubs (
    node_id       BIGINT  PRIMARY KEY,
    owner         TEXT    NOT NULL,
    until         BIGINT  NOT NULL,
    cursor_data   TEXT    NOT NULL DEFAULT '',
    cursor_seq    BIGINT  NOT NULL DEFAULT -1,
    cursor_idx    BIGINT  NOT NULL DEFAULT -1,
    pass_started  BIGINT  NOT NULL DEFAULT 0,
    passes        BIGINT  NOT NULL DEFAULT 0
);
-- The scrub walks one node's placements in order.
CREATE INDEX placements_by_node_key ON placements (node_id, data_id, seq, idx);
