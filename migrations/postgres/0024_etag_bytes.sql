-- Performance and scale: an object's ETag is stored as the 16 bytes of its
-- MD5 (a multipart object's "-N" suffix is its parts_count), not as 32 hex
-- digits: 16 bytes less per object. Any other ETag, which Tenfold never
-- made, keeps its text, with a NUL after it should it be 16 bytes long.
ALTER TABLE objects ALTER COLUMN etag TYPE BYTEA USING (
    CASE WHEN etag ~ '^[0-9a-f]{32}'
              AND etag = substr(etag, 1, 32) || COALESCE('-' || parts_count, '')
         THEN decode(substr(etag, 1, 32), 'hex')
         WHEN octet_length(etag) = 16 THEN convert_to(etag, 'UTF8') || '\x00'::bytea
         ELSE convert_to(etag, 'UTF8') END);
