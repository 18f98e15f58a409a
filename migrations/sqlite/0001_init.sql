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

-- Stored data: the bytes of one PUT or of one multipart part, cut into
-- segments, each segment into fragments, each fragment replicated.
-- A `data_id` names the fragments on the nodes: `{data_id}/{seq}/{idx}`.
CREATE TABLE segments (
    data_id        TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    plain_offset   BIGINT  NOT NULL,
    plain_size     BIGINT  NOT NULL,
    fragment_count INTEGER NOT NULL,
    PRIMARY KEY (data_id, seq)
);

CREATE TABLE fragments (
    data_id    TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    size       BIGINT  NOT NULL,
    md5        TEXT    NOT NULL,
    PRIMARY KEY (data_id, seq, idx),
    FOREIGN KEY (data_id, seq) REFERENCES segments (data_id, seq) ON DELETE CASCADE
);

CREATE TABLE placements (
    data_id    TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    network    TEXT    NOT NULL CHECK (network IN ('mainnet', 'testnet', 'overflow')),
    node_id    INTEGER REFERENCES nodes (id),
    cid        TEXT,
    FOREIGN KEY (data_id, seq, idx) REFERENCES fragments (data_id, seq, idx) ON DELETE CASCADE
);
CREATE INDEX placements_by_fragment ON placements (data_id, seq, idx);
CREATE INDEX placements_by_node ON placements (node_id);

-- One row per visible object; a PUT or CompleteMultipartUpload inserts it
-- only once every fragment is placed, in one transaction.
CREATE TABLE objects (
    id            TEXT    PRIMARY KEY,
    bucket        TEXT    NOT NULL REFERENCES buckets (name),
    key           TEXT    NOT NULL,
    size          BIGINT  NOT NULL,
    etag          TEXT    NOT NULL,
    content_type  TEXT,
    metadata      TEXT    NOT NULL,
    headers       TEXT    NOT NULL,
    checksums     TEXT    NOT NULL,
    last_modified BIGINT  NOT NULL,
    parts_count   INTEGER,
    UNIQUE (bucket, key)
);

-- The data an object is made of, in order: one part for a PUT, the chosen
-- parts of a multipart upload.
CREATE TABLE object_parts (
    object_id    TEXT    NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    part_number  INTEGER NOT NULL,
    data_id      TEXT    NOT NULL,
    plain_offset BIGINT  NOT NULL,
    size         BIGINT  NOT NULL,
    etag         TEXT    NOT NULL,
    PRIMARY KEY (object_id, part_number)
);

-- Multipart uploads in progress and their parts.
CREATE TABLE uploads (
    id            TEXT    PRIMARY KEY,
    bucket        TEXT    NOT NULL REFERENCES buckets (name),
    key           TEXT    NOT NULL,
    content_type  TEXT,
    metadata      TEXT    NOT NULL,
    headers       TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL
);
CREATE INDEX uploads_by_key ON uploads (bucket, key, id);

CREATE TABLE upload_parts (
    upload_id     TEXT    NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    part_number   INTEGER NOT NULL,
    data_id       TEXT    NOT NULL,
    size          BIGINT  NOT NULL,
    etag          TEXT    NOT NULL,
    last_modified BIGINT  NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);

-- Completed uploads, so that a CompleteMultipartUpload repeated with the
-- same part list answers the same object again, as S3 does.
CREATE TABLE completed_uploads (
    upload_id     TEXT    PRIMARY KEY,
    bucket        TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    object_id     TEXT    NOT NULL,
    parts         TEXT    NOT NULL,
    completed_at  BIGINT  NOT NULL
);

-- Replicas nothing references any more, waiting to be deleted from their
-- node (one that was down when its object was overwritten or deleted).
CREATE TABLE garbage (
    id          INTEGER PRIMARY KEY,
    node_id     INTEGER NOT NULL,
    node_key    TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);
