-- Durability I: a fragment has at most one placement on a node (a node
-- holds one file under the fragment's key). Placements recorded twice
-- (two gateways repairing one fragment at once, before repairs re-read
-- what they claimed) are dropped, keeping the first: the file stays named
-- once, and the usage triggers take the copy off the node's counters. Then
-- the node index becomes unique, so it can never happen again.
DELETE FROM placements WHERE node_id IS NOT NULL AND rowid NOT IN
    (SELECT MIN(rowid) FROM placements WHERE node_id IS NOT NULL
     GROUP BY node_id, data_id, seq, idx);
DROP INDEX placements_by_node_key;
CREATE UNIQUE INDEX placements_by_node_key ON placements (node_id, data_id, seq, idx);
