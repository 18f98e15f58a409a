-- The checksum algorithm a multipart upload was created with, and each
-- part's checksums, so that completion can give the object the composite
-- checksum S3 gives it (the checksum of the parts' checksums, "-N").
ALTER TABLE uploads ADD COLUMN checksum_algorithm TEXT;
ALTER TABLE upload_parts ADD COLUMN checksums TEXT NOT NULL DEFAULT '{}';
ALTER TABLE object_parts ADD COLUMN checksums TEXT NOT NULL DEFAULT '{}';
