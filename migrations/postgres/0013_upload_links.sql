-- The browser: upload links are share links that take files instead of
-- giving them (`upload` = 1), within an optional total of bytes and of
-- files; what was taken so far is reserved here before each file is read.
ALTER TABLE shares ADD COLUMN upload BIGINT NOT NULL DEFAULT 0;
ALTER TABLE shares ADD COLUMN max_bytes BIGINT;
ALTER TABLE shares ADD COLUMN max_files BIGINT;
ALTER TABLE shares ADD COLUMN used_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE shares ADD COLUMN used_files BIGINT NOT NULL DEFAULT 0;
-- The multipart uploads of large files sent through an upload link: which
-- link started each, and the size it reserved (the parts must add up to
-- it); gone with the upload once it is completed or aborted.
CREATE TABLE link_uploads (
    upload_id   TEXT    PRIMARY KEY REFERENCES uploads(id) ON DELETE CASCADE,
    token_hash  TEXT    NOT NULL,
    size        BIGINT  NOT NULL
);
