-- Encryption at rest: each piece of stored data (a PUT, or one part) has its
-- own data key, kept here wrapped by a master key (whose id is recorded, so
-- that master keys can be rotated). Data stored before has no row: its
-- fragments are not encrypted.
CREATE TABLE data_keys (
    data_id  TEXT PRIMARY KEY,
    key_id   TEXT NOT NULL,
    wrapped  TEXT NOT NULL
);
CREATE INDEX data_keys_by_master ON data_keys (key_id);
