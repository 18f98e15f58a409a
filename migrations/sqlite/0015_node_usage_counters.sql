-- Performance and scale: a node's stored bytes and replica count are kept
-- as counters, not summed over every placement on each registry refresh.
-- Each placement carries its fragment's size; triggers append every change
-- to node_usage_log (an append-only log, so concurrent commits never wait
-- on a node's row), and the registry refresh folds the log into
-- nodes.stored and nodes.replicas.
ALTER TABLE placements ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
UPDATE placements SET size = COALESCE((SELECT f.size FROM fragments f
    WHERE f.data_id = placements.data_id AND f.seq = placements.seq AND f.idx = placements.idx), 0);
ALTER TABLE nodes ADD COLUMN stored BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN replicas BIGINT NOT NULL DEFAULT 0;
UPDATE nodes SET
    stored = COALESCE((SELECT SUM(p.size) FROM placements p WHERE p.node_id = nodes.id), 0),
    replicas = (SELECT COUNT(*) FROM placements p WHERE p.node_id = nodes.id);
CREATE TABLE node_usage_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id  INTEGER NOT NULL,
    bytes    BIGINT  NOT NULL,
    replicas BIGINT  NOT NULL
);
CREATE INDEX node_usage_log_by_node ON node_usage_log (node_id);
CREATE TRIGGER placements_usage_in AFTER INSERT ON placements
WHEN NEW.node_id IS NOT NULL BEGIN
    INSERT INTO node_usage_log (node_id, bytes, replicas) VALUES (NEW.node_id, NEW.size, 1);
END;
CREATE TRIGGER placements_usage_out AFTER DELETE ON placements
WHEN OLD.node_id IS NOT NULL BEGIN
    INSERT INTO node_usage_log (node_id, bytes, replicas) VALUES (OLD.node_id, -OLD.size, -1);
END;
CREATE TRIGGER placements_usage_moved AFTER UPDATE OF node_id, size ON placements BEGIN
    INSERT INTO node_usage_log (node_id, bytes, replicas)
        SELECT OLD.node_id, -OLD.size, -1 WHERE OLD.node_id IS NOT NULL;
    INSERT INTO node_usage_log (node_id, bytes, replicas)
        SELECT NEW.node_id, NEW.size, 1 WHERE NEW.node_id IS NOT NULL;
END;
