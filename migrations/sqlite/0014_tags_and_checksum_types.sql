-- S3 round 2: object tags (a JSON list of [key, value] pairs, in the order
-- they were given), set on a PUT, a multipart upload or by
-- PutObjectTagging; and a multipart upload's checksum type (COMPOSITE, or
-- FULL_OBJECT: the object's checksum is of its whole content).
ALTER TABLE objects ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE uploads ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE uploads ADD COLUMN checksum_type TEXT;
