-- A task's costs add up: its money columns are numeric(30, 12), as the contracts' Usd, so no sum of
-- calls (each at most 10,000 USD by contract) can overflow one row, nor a report's sums.
ALTER TABLE task_ledger ALTER COLUMN estimated_cost_usd TYPE numeric(30, 12),
    ALTER COLUMN baseline_cost_usd TYPE numeric(30, 12),
    ALTER COLUMN actual_cost_usd TYPE numeric(30, 12),
    ALTER COLUMN baseline_actual_cost_usd TYPE numeric(30, 12);
