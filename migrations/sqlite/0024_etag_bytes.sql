-- Performance and scale: an object's ETag is stored as the 16 bytes of its
-- MD5 (a multipart object's "-N" suffix is its parts_count), not as 32 hex
-- digits: 16 bytes less per object. Any other ETag, which Tenfold never
-- made, keeps its text, with a NUL after it should it be 16 bytes long.
CREATE TABLE packed_objects (
    bucket        TEXT    NOT NULL REFERENCES buckets (name),
    key           TEXT    NOT NULL,
    id            BLOB    NOT NULL,
    size          BIGINT  NOT NULL,
    etag          BLOB    NOT NULL,
    content_type  TEXT,
    metadata      TEXT,
    headers       TEXT,
    checksums     TEXT    NOT NULL,
    last_modified BIGINT  NOT NULL,
    parts_count   INTEGER,
    tags          TEXT,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
INSERT INTO packed_objects
SELECT bucket, key, id, size,
       CASE WHEN length(etag) >= 32 AND substr(etag, 1, 32) NOT GLOB '*[^0-9a-f]*'
                 AND etag = substr(etag, 1, 32) || COALESCE('-' || parts_count, '')
            THEN unhex(substr(etag, 1, 32))
            WHEN length(CAST(etag AS BLOB)) = 16 THEN unhex(hex(etag) || '00')
            ELSE CAST(etag AS BLOB) END,
       content_type, metadata, headers, checksums, last_modified, parts_count, tags
FROM objects;
DROP TABLE objects;
ALTER TABLE packed_objects RENAME TO objects;
