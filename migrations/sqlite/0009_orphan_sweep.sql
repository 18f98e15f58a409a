-- Durability: replicas on a node that nothing in the index names (left by a
-- gateway killed mid-upload, or by a node write that timed out but
-- completed) are swept. A write in progress is not an orphan: each gateway
-- records the data it has been writing for a while here, with a heartbeat
-- (ms) it renews, so no other gateway's sweep takes it for one.
CREATE TABLE writes_in_flight (
    data_id    TEXT    PRIMARY KEY,
    heartbeat  BIGINT  NOT NULL
);
-- One gateway sweeps a node at a time: it holds the node's claim until
-- `until` (ms) and renews it while it sweeps.
CREATE TABLE node_sweeps (
    node_id    BIGINT  PRIMARY KEY,
    owner      TEXT    NOT NULL,
    until      BIGINT  NOT NULL
);
-- The sweep asks, page by page of a node's keys, which of them the garbage
-- queue names.
CREATE INDEX garbage_by_node ON garbage (node_id, node_key);
