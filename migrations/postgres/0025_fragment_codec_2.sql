-- A fence, with no schema change: from this migration on, gateways write
-- fragments of codec 2 (sealed frames zstd could not shrink are stored
-- raw; see gateway/src/fragment.rs), which gateways built before it cannot
-- read. Such a gateway refuses to start on an index that has this
-- migration ("newer than this binary"), rather than failing reads of new
-- objects. Older fragments (codec 1) still read on every version.
SELECT 1;
