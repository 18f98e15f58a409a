-- Share links: anyone holding the token may list and download the objects
-- of `bucket` whose keys start with `prefix`, until `expires_at` (ms).
-- Only a SHA-256 of the token is kept, so the index alone opens nothing.
CREATE TABLE shares (
    token_hash  TEXT    PRIMARY KEY,
    bucket      TEXT    NOT NULL REFERENCES buckets(name) ON DELETE CASCADE,
    prefix      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    revoked     BIGINT  NOT NULL DEFAULT 0
);
