-- Money as the contracts' Usd: numeric(30, 12).
ALTER TABLE decisions ALTER COLUMN estimated_cost_usd TYPE numeric(30, 12);
ALTER TABLE routing_policies ALTER COLUMN max_cost_per_task_usd TYPE numeric(30, 12);
