-- Where each segment's zstd frames are (JSON: plaintext bytes per frame and
-- the compressed end of each), so that a range read fetches only the
-- fragments holding the frames it needs. NULL for older segments: they are
-- read whole.
ALTER TABLE segments ADD COLUMN frames TEXT;
