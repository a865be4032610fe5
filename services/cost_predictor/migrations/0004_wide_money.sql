-- Money as the contracts' Usd: numeric(30, 12).
ALTER TABLE estimate_errors ALTER COLUMN predicted_cost_usd TYPE numeric(30, 12),
    ALTER COLUMN actual_cost_usd TYPE numeric(30, 12);
