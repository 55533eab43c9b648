-- Placeholder for schema version 6, which another branch (the operator console) defines. The lead
-- replaces this file with that branch's 0006 when merging; it only keeps the files in sequence here.
SELECT 1;
