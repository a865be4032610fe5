-- A task may make several calls (a failure, then a fallback): its actual cost is their sum.
ALTER TABLE task_ledger ADD COLUMN cost_events int NOT NULL DEFAULT 0;
UPDATE task_ledger SET cost_events = 1 WHERE actual_cost_usd IS NOT NULL;
