-- Placeholder for migration 0007, taken by another branch (issue 13/14): lets this branch's 0009 apply in
-- sequence. Delete this file when merging (the real 0007 replaces it).
SELECT 1;
