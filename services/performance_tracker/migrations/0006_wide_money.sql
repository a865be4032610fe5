-- A bucket's cost is a sum of calls: numeric(30, 12), as the contracts' Usd.
ALTER TABLE stat_buckets ALTER COLUMN cost_usd TYPE numeric(30, 12);
