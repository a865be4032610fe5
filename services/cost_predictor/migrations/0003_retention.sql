-- A task's estimates wait for its cost for task_retention_days, then are pruned.
CREATE INDEX estimates_created_at ON estimates USING brin (created_at);
