-- A segment's master key is recorded by the database as the segment is
-- inserted, in the same statement, instead of by one more statement of
-- each write transaction (a round trip to the connection's thread).
CREATE TRIGGER segments_record_master_key AFTER INSERT ON segments
FOR EACH ROW WHEN NEW.key_id IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO master_keys_used (key_id) VALUES (NEW.key_id);
END;
