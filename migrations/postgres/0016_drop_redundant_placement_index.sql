-- Performance and scale: placements_by_node (node_id) is a prefix of
-- placements_by_node_key (node_id, data_id, seq, idx), which serves every
-- query by node; keeping both only cost index bytes and write time.
DROP INDEX placements_by_node;
