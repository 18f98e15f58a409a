-- Pins Tenfold made on the overflow store, each recorded just before it
-- is made, so that the orphan sweep can undo a pin whose write never
-- committed (a gateway killed mid-upload) without touching what others
-- pinned on a shared daemon. A row goes once its content id is in use by
-- the index, or unpinned.
CREATE TABLE pins_made (
    cid      TEXT    NOT NULL,
    data_id  BYTEA   NOT NULL,
    made_at  BIGINT  NOT NULL,
    PRIMARY KEY (cid, data_id)
);
CREATE INDEX pins_made_by_age ON pins_made (made_at);
