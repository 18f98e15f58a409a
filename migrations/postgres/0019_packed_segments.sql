-- Performance and scale: a segment is one row. Its fragments' sizes, MD5s
-- and copies are packed into `fragments` (the format is in
-- gateway/src/index/packed.rs: per fragment a u32 size, the 16-byte MD5, a
-- u8 copy count and a u32 per copy, node_id * 2 + 1 on the testnet,
-- node_id * 2 on the mainnet, 0 for the overflow pin, whose content id is
-- in overflow_pins with its size), and its data's wrapped key sits in every segment row.
-- Data ids are stored as their 16 bytes. The per-placement rows, their
-- two indexes and the usage triggers go: the gateway logs node usage in
-- the same transactions, and finds the copies on a node by walking the
-- segments.
CREATE TABLE packed_segments (
    data_id      BYTEA   NOT NULL,
    seq          INTEGER NOT NULL,
    plain_offset BIGINT  NOT NULL,
    plain_size   BIGINT  NOT NULL,
    frames       TEXT,
    key_id       TEXT,
    wrapped      BYTEA,
    fragments    BYTEA   NOT NULL,
    PRIMARY KEY (data_id, seq)
);
INSERT INTO packed_segments
SELECT (CASE WHEN s.data_id ~ '^([0-9a-f]{2})*$' THEN decode(s.data_id, 'hex') ELSE convert_to(s.data_id, 'UTF8') END), s.seq, s.plain_offset, s.plain_size, s.frames, k.key_id,
       decode(k.wrapped, 'hex'),
       COALESCE((SELECT decode(string_agg(
                    lpad(to_hex(f.size), 8, '0') || f.md5
                    || lpad(to_hex((SELECT COUNT(*) FROM placements p
                                    WHERE p.data_id = f.data_id AND p.seq = f.seq AND p.idx = f.idx)), 2, '0')
                    || COALESCE((SELECT string_agg(lpad(to_hex(
                                     CASE WHEN p.network = 'overflow' THEN 0
                                          WHEN p.network = 'testnet' THEN p.node_id * 2 + 1
                                          ELSE p.node_id * 2 END), 8, '0'), '')
                                 FROM placements p
                                 WHERE p.data_id = f.data_id AND p.seq = f.seq AND p.idx = f.idx), ''),
                    '' ORDER BY f.idx), 'hex')
                 FROM fragments f WHERE f.data_id = s.data_id AND f.seq = s.seq), '\x'::bytea)
FROM segments s LEFT JOIN data_keys k ON k.data_id = s.data_id;
CREATE TABLE overflow_pins (
    data_id  BYTEA   NOT NULL,
    seq      INTEGER NOT NULL,
    idx      INTEGER NOT NULL,
    cid      TEXT    NOT NULL,
    size     BIGINT  NOT NULL,
    PRIMARY KEY (data_id, seq, idx)
);
INSERT INTO overflow_pins
SELECT (CASE WHEN p.data_id ~ '^([0-9a-f]{2})*$' THEN decode(p.data_id, 'hex') ELSE convert_to(p.data_id, 'UTF8') END), p.seq, p.idx, p.cid, f.size FROM placements p
JOIN fragments f ON f.data_id = p.data_id AND f.seq = p.seq AND f.idx = p.idx
WHERE p.network = 'overflow' AND p.cid IS NOT NULL
ON CONFLICT DO NOTHING;
CREATE INDEX overflow_pins_by_cid ON overflow_pins (cid);
-- The master keys that wrapped any data key, for the check at start-up
-- that every one is configured (without a scan of the segments).
CREATE TABLE master_keys_used (
    key_id  TEXT  PRIMARY KEY
);
INSERT INTO master_keys_used SELECT DISTINCT key_id FROM data_keys;
DROP TABLE placements;
DROP FUNCTION placements_usage();
DROP TABLE fragments;
DROP TABLE segments;
DROP TABLE data_keys;
ALTER TABLE packed_segments RENAME TO segments;
ALTER INDEX packed_segments_pkey RENAME TO segments_pkey;

ALTER TABLE object_parts ALTER COLUMN data_id TYPE BYTEA USING (CASE WHEN data_id ~ '^([0-9a-f]{2})*$' THEN decode(data_id, 'hex') ELSE convert_to(data_id, 'UTF8') END);
ALTER TABLE upload_parts ALTER COLUMN data_id TYPE BYTEA USING (CASE WHEN data_id ~ '^([0-9a-f]{2})*$' THEN decode(data_id, 'hex') ELSE convert_to(data_id, 'UTF8') END);
ALTER TABLE repairs ALTER COLUMN data_id TYPE BYTEA USING (CASE WHEN data_id ~ '^([0-9a-f]{2})*$' THEN decode(data_id, 'hex') ELSE convert_to(data_id, 'UTF8') END);
ALTER TABLE writes_in_flight ALTER COLUMN data_id TYPE BYTEA USING (CASE WHEN data_id ~ '^([0-9a-f]{2})*$' THEN decode(data_id, 'hex') ELSE convert_to(data_id, 'UTF8') END);

-- A scrub pass starts again from the first segment.
UPDATE node_scrubs SET cursor_data = '', cursor_seq = -1, cursor_idx = -1;
