-- Placeholder for migration 0008, taken by another branch (issue 13/14): lets this branch's 0009 apply in
-- sequence. Delete this file when merging (the real 0008 replaces it).
SELECT 1;
