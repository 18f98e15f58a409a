-- Durability I: a fragment has at most one placement on a node (a node
-- holds one file under the fragment's key). Placements recorded twice
-- (two gateways repairing one fragment at once, before repairs re-read
-- what they claimed) are dropped, keeping the first: the file stays named
-- once, and the usage trigger takes the copy off the node's counters. Then
-- the node index becomes unique, so it can never happen again.
DELETE FROM placements a USING placements b
    WHERE a.node_id IS NOT NULL AND a.node_id = b.node_id AND a.data_id = b.data_id
      AND a.seq = b.seq AND a.idx = b.idx AND a.ctid > b.ctid;
DROP INDEX placements_by_node_key;
CREATE UNIQUE INDEX placements_by_node_key ON placements (node_id, data_id, seq, idx);
