-- Overflow: fragments in the overflow store (IPFS) are placements of network
-- 'overflow' with a content id; finding them, and whether a content id is
-- still used, must not scan every placement.
CREATE INDEX placements_by_cid ON placements (cid) WHERE cid IS NOT NULL;
CREATE INDEX placements_overflowed ON placements (network) WHERE network = 'overflow';

-- The garbage queue also holds content ids to unpin.
CREATE TABLE garbage_v2 (
    id          INTEGER PRIMARY KEY,
    node_id     INTEGER,
    node_key    TEXT,
    cid         TEXT,
    created_at  BIGINT  NOT NULL,
    CHECK ((node_id IS NOT NULL AND node_key IS NOT NULL AND cid IS NULL)
        OR (node_id IS NULL AND node_key IS NULL AND cid IS NOT NULL))
);
INSERT INTO garbage_v2 (id, node_id, node_key, created_at)
    SELECT id, node_id, node_key, created_at FROM garbage;
DROP TABLE garbage;
ALTER TABLE garbage_v2 RENAME TO garbage;
