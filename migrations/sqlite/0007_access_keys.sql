-- Access keys besides the admin key of the configuration. The secret is
-- sealed with the master key (`tfsealed1:KEYID:HEX`); an admin key may do
-- everything, any other key only what concerns the buckets it created.
CREATE TABLE access_keys (
    access_key  TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    secret      TEXT    NOT NULL,
    admin       INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT  NOT NULL
);

-- The access key that created a bucket; NULL for the configuration's admin
-- key (and for buckets made before access keys existed).
ALTER TABLE buckets ADD COLUMN owner TEXT;

-- Share links are signed tokens now: `token_hash` holds the SHA-256 of the
-- link's random id, and links made before signing no longer open.
