-- The browser: each bucket's CORS rules (PutBucketCors), as JSON; NULL
-- when CORS is not configured on it.
ALTER TABLE buckets ADD COLUMN cors TEXT;
