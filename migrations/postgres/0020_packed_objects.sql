-- Performance and scale: an object is one row keyed by its bucket and key
-- (no second index). A single PUT's object id is its data's id, so it
-- needs no part row: object_parts holds multipart objects' parts only.
-- Ids are stored as their 16 bytes; empty metadata, headers and tags are
-- NULL. Parts go with their object in the same transaction (no foreign
-- key: the object's id is not a key of its own any more).
CREATE TABLE packed_objects (
    bucket        TEXT COLLATE "C" NOT NULL REFERENCES buckets (name),
    key           TEXT COLLATE "C" NOT NULL,
    id            BYTEA   NOT NULL,
    size          BIGINT  NOT NULL,
    etag          TEXT    NOT NULL,
    content_type  TEXT,
    metadata      TEXT,
    headers       TEXT,
    checksums     TEXT    NOT NULL,
    last_modified BIGINT  NOT NULL,
    parts_count   INTEGER,
    tags          TEXT,
    PRIMARY KEY (bucket, key)
);
INSERT INTO packed_objects
SELECT o.bucket, o.key,
       CASE WHEN o.parts_count IS NULL
            THEN COALESCE((SELECT op.data_id FROM object_parts op
                           WHERE op.object_id = o.id AND op.part_number = 1),
                          CASE WHEN o.id ~ '^([0-9a-f]{2})*$' THEN decode(o.id, 'hex')
                               ELSE convert_to(o.id, 'UTF8') END)
            ELSE CASE WHEN o.id ~ '^([0-9a-f]{2})*$' THEN decode(o.id, 'hex')
                      ELSE convert_to(o.id, 'UTF8') END END,
       o.size, o.etag, o.content_type, NULLIF(o.metadata, '{}'), NULLIF(o.headers, '{}'),
       o.checksums, o.last_modified, o.parts_count, NULLIF(o.tags, '[]')
FROM objects o;
CREATE TABLE packed_object_parts (
    object_id    BYTEA   NOT NULL,
    part_number  INTEGER NOT NULL,
    data_id      BYTEA   NOT NULL,
    plain_offset BIGINT  NOT NULL,
    size         BIGINT  NOT NULL,
    etag         TEXT    NOT NULL,
    checksums    TEXT    NOT NULL DEFAULT '{}',
    PRIMARY KEY (object_id, part_number)
);
INSERT INTO packed_object_parts
SELECT CASE WHEN op.object_id ~ '^([0-9a-f]{2})*$' THEN decode(op.object_id, 'hex')
            ELSE convert_to(op.object_id, 'UTF8') END,
       op.part_number, op.data_id, op.plain_offset, op.size, op.etag, op.checksums
FROM object_parts op JOIN objects o ON o.id = op.object_id
WHERE o.parts_count IS NOT NULL;
DROP TABLE object_parts;
DROP TABLE objects;
ALTER TABLE packed_objects RENAME TO objects;
ALTER INDEX packed_objects_pkey RENAME TO objects_pkey;
ALTER TABLE packed_object_parts RENAME TO object_parts;
ALTER INDEX packed_object_parts_pkey RENAME TO object_parts_pkey;
