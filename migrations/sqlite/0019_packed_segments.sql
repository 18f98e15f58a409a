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
    data_id      BLOB    NOT NULL,
    seq          INTEGER NOT NULL,
    plain_offset BIGINT  NOT NULL,
    plain_size   BIGINT  NOT NULL,
    frames       TEXT,
    key_id       TEXT,
    wrapped      BLOB,
    fragments    BLOB    NOT NULL,
    PRIMARY KEY (data_id, seq)
) WITHOUT ROWID;
INSERT INTO packed_segments
SELECT COALESCE(unhex(s.data_id), CAST(s.data_id AS BLOB)), s.seq, s.plain_offset, s.plain_size, s.frames, k.key_id, unhex(k.wrapped),
       COALESCE((SELECT unhex(group_concat(
                    printf('%08X', f.size) || f.md5
                    || printf('%02X', (SELECT COUNT(*) FROM placements p
                                       WHERE p.data_id = f.data_id AND p.seq = f.seq AND p.idx = f.idx))
                    || COALESCE((SELECT group_concat(printf('%08X',
                                     CASE WHEN p.network = 'overflow' THEN 0
                                          WHEN p.network = 'testnet' THEN p.node_id * 2 + 1
                                          ELSE p.node_id * 2 END), '')
                                 FROM placements p
                                 WHERE p.data_id = f.data_id AND p.seq = f.seq AND p.idx = f.idx), ''),
                    '' ORDER BY f.idx))
                 FROM fragments f WHERE f.data_id = s.data_id AND f.seq = s.seq), X'')
FROM segments s LEFT JOIN data_keys k ON k.data_id = s.data_id;
CREATE TABLE overflow_pins (
    data_id  BLOB    NOT NULL,
    seq      INTEGER NOT NULL,
    idx      INTEGER NOT NULL,
    cid      TEXT    NOT NULL,
    size     BIGINT  NOT NULL,
    PRIMARY KEY (data_id, seq, idx)
) WITHOUT ROWID;
INSERT OR IGNORE INTO overflow_pins
SELECT COALESCE(unhex(p.data_id), CAST(p.data_id AS BLOB)), p.seq, p.idx, p.cid, f.size FROM placements p
JOIN fragments f ON f.data_id = p.data_id AND f.seq = p.seq AND f.idx = p.idx
WHERE p.network = 'overflow' AND p.cid IS NOT NULL;
CREATE INDEX overflow_pins_by_cid ON overflow_pins (cid);
-- The master keys that wrapped any data key, for the check at start-up
-- that every one is configured (without a scan of the segments).
CREATE TABLE master_keys_used (
    key_id  TEXT  PRIMARY KEY
);
INSERT INTO master_keys_used SELECT DISTINCT key_id FROM data_keys;
DROP TABLE placements;
DROP TABLE fragments;
DROP TABLE segments;
DROP TABLE data_keys;
ALTER TABLE packed_segments RENAME TO segments;

CREATE TABLE object_parts_packed (
    object_id    TEXT    NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    part_number  INTEGER NOT NULL,
    data_id      BLOB    NOT NULL,
    plain_offset BIGINT  NOT NULL,
    size         BIGINT  NOT NULL,
    etag         TEXT    NOT NULL,
    checksums    TEXT    NOT NULL DEFAULT '{}',
    PRIMARY KEY (object_id, part_number)
) WITHOUT ROWID;
INSERT INTO object_parts_packed
SELECT object_id, part_number, COALESCE(unhex(data_id), CAST(data_id AS BLOB)), plain_offset, size, etag, checksums FROM object_parts;
DROP TABLE object_parts;
ALTER TABLE object_parts_packed RENAME TO object_parts;

CREATE TABLE upload_parts_packed (
    upload_id     TEXT    NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    part_number   INTEGER NOT NULL,
    data_id       BLOB    NOT NULL,
    size          BIGINT  NOT NULL,
    etag          TEXT    NOT NULL,
    last_modified BIGINT  NOT NULL,
    checksums     TEXT    NOT NULL DEFAULT '{}',
    PRIMARY KEY (upload_id, part_number)
);
INSERT INTO upload_parts_packed
SELECT upload_id, part_number, COALESCE(unhex(data_id), CAST(data_id AS BLOB)), size, etag, last_modified, checksums FROM upload_parts;
DROP TABLE upload_parts;
ALTER TABLE upload_parts_packed RENAME TO upload_parts;

CREATE TABLE repairs_packed (
    data_id     BLOB    NOT NULL,
    seq         BIGINT  NOT NULL,
    idx         BIGINT  NOT NULL,
    queued      BIGINT  NOT NULL DEFAULT 0,
    not_before  BIGINT  NOT NULL DEFAULT 0,
    attempts    BIGINT  NOT NULL DEFAULT 0,
    last_error  TEXT,
    PRIMARY KEY (data_id, seq, idx)
);
INSERT INTO repairs_packed
SELECT COALESCE(unhex(data_id), CAST(data_id AS BLOB)), seq, idx, queued, not_before, attempts, last_error FROM repairs;
DROP TABLE repairs;
ALTER TABLE repairs_packed RENAME TO repairs;

CREATE TABLE writes_in_flight_packed (
    data_id    BLOB    PRIMARY KEY,
    heartbeat  BIGINT  NOT NULL
);
INSERT INTO writes_in_flight_packed SELECT COALESCE(unhex(data_id), CAST(data_id AS BLOB)), heartbeat FROM writes_in_flight;
DROP TABLE writes_in_flight;
ALTER TABLE writes_in_flight_packed RENAME TO writes_in_flight;

-- A scrub pass starts again from the first segment.
UPDATE node_scrubs SET cursor_data = '', cursor_seq = -1, cursor_idx = -1;
