-- Placeholder on branch issue-5 only, so the migrator's 1..N rule holds here: the real 0002_scouts.sql
-- belongs to the scouts issue (issue 4) and replaces this file when the branches are merged.
SELECT 1;
