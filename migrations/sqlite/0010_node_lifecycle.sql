-- Durability II: the node lifecycle and repair.
-- A node's state: 'active' (takes new replicas), 'draining' (its replicas
-- are moved off by repair, it takes no new ones), 'lost' (unreachable for
-- longer than node_lost_after: its replicas no longer count and are
-- repaired elsewhere), 'disqualified' (failed too many audits: the same).
-- `last_seen` (ms) is when a gateway's probe last reached it.
ALTER TABLE nodes ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
ALTER TABLE nodes ADD COLUMN last_seen BIGINT;
-- Fragments queued for repair besides those with a replica on a node that
-- is not active (found through placements_by_node) or in the overflow
-- store: each is claimed by one gateway at a time (`not_before`, ms) and
-- retried with a back-off after a failure.
CREATE TABLE repairs (
    data_id     TEXT    NOT NULL,
    seq         BIGINT  NOT NULL,
    idx         BIGINT  NOT NULL,
    queued      BIGINT  NOT NULL DEFAULT 0,
    not_before  BIGINT  NOT NULL DEFAULT 0,
    attempts    BIGINT  NOT NULL DEFAULT 0,
    last_error  TEXT,
    PRIMARY KEY (data_id, seq, idx)
);
-- Settings every gateway shares, and counters for `tenfold status`.
CREATE TABLE settings (
    name   TEXT    PRIMARY KEY,
    value  TEXT    NOT NULL
);
