-- Tenfold index, SQLite engine. Keys and names compare as bytes (BINARY).

CREATE TABLE nodes (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    endpoint    TEXT    NOT NULL,
    network     TEXT    NOT NULL CHECK (network IN ('mainnet', 'testnet')),
    capacity    BIGINT  NOT NULL,
    access_key  TEXT    NOT NULL,
    secret_key  TEXT    NOT NULL,
    bucket      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE buckets (
    name        TEXT    PRIMARY KEY,
    created_at  BIGINT  NOT NULL
);

-- One row per visible object; a PUT inserts its row only once every
-- fragment is placed, in the same transaction as its fragments.
CREATE TABLE objects (
    id            TEXT    PRIMARY KEY,
    bucket        TEXT    NOT NULL REFERENCES buckets (name),
    key           TEXT    NOT NULL,
    size          BIGINT  NOT NULL,
    etag          TEXT    NOT NULL,
    content_type  TEXT,
    metadata      TEXT    NOT NULL,
    last_modified BIGINT  NOT NULL,
    UNIQUE (bucket, key)
);

CREATE TABLE segments (
    object_id      TEXT    NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL,
    plain_offset   BIGINT  NOT NULL,
    plain_size     BIGINT  NOT NULL,
    fragment_count INTEGER NOT NULL,
    PRIMARY KEY (object_id, seq)
);

CREATE TABLE fragments (
    object_id  TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    size       BIGINT  NOT NULL,
    md5        TEXT    NOT NULL,
    PRIMARY KEY (object_id, seq, idx),
    FOREIGN KEY (object_id, seq) REFERENCES segments (object_id, seq) ON DELETE CASCADE
);

CREATE TABLE placements (
    object_id  TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    network    TEXT    NOT NULL CHECK (network IN ('mainnet', 'testnet', 'overflow')),
    node_id    INTEGER REFERENCES nodes (id),
    cid        TEXT,
    FOREIGN KEY (object_id, seq, idx) REFERENCES fragments (object_id, seq, idx) ON DELETE CASCADE
);
CREATE INDEX placements_by_fragment ON placements (object_id, seq, idx);
CREATE INDEX placements_by_node ON placements (node_id);

-- Replicas no object references any more, waiting to be deleted from their
-- node (a node that is down when an object is overwritten or deleted).
CREATE TABLE garbage (
    id          INTEGER PRIMARY KEY,
    node_id     INTEGER NOT NULL,
    node_key    TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);
