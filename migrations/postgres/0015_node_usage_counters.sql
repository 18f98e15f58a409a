-- Performance and scale: a node's stored bytes and replica count are kept
-- as counters, not summed over every placement on each registry refresh.
-- Each placement carries its fragment's size; a trigger appends every
-- change to node_usage_log (an append-only log, so concurrent commits of
-- several gateways never wait on, or deadlock over, a node's row), and the
-- registry refresh folds the log into nodes.stored and nodes.replicas.
ALTER TABLE placements ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
UPDATE placements p SET size = f.size FROM fragments f
    WHERE f.data_id = p.data_id AND f.seq = p.seq AND f.idx = p.idx;
ALTER TABLE nodes ADD COLUMN stored BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN replicas BIGINT NOT NULL DEFAULT 0;
UPDATE nodes SET
    stored = COALESCE((SELECT SUM(p.size) FROM placements p WHERE p.node_id = nodes.id), 0),
    replicas = (SELECT COUNT(*) FROM placements p WHERE p.node_id = nodes.id);
CREATE TABLE node_usage_log (
    id       BIGSERIAL PRIMARY KEY,
    node_id  BIGINT NOT NULL,
    bytes    BIGINT NOT NULL,
    replicas BIGINT NOT NULL
);
CREATE INDEX node_usage_log_by_node ON node_usage_log (node_id);
CREATE FUNCTION placements_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') AND OLD.node_id IS NOT NULL THEN
        INSERT INTO node_usage_log (node_id, bytes, replicas) VALUES (OLD.node_id, -OLD.size, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.node_id IS NOT NULL THEN
        INSERT INTO node_usage_log (node_id, bytes, replicas) VALUES (NEW.node_id, NEW.size, 1);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER placements_usage AFTER INSERT OR DELETE OR UPDATE OF node_id, size ON placements
    FOR EACH ROW EXECUTE FUNCTION placements_usage();
