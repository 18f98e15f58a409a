-- Kept in step with migrations/sqlite/0002_shares.sql: on Postgres, 0001_init.sql
-- already creates what that migration adds (this engine started from the
-- SQLite schema at 0007). From 0008 on, every change has a file of the same
-- number on both engines.
SELECT 1;
