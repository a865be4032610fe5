-- The count of timed calls was never read: latency percentiles come from latency_buckets.
ALTER TABLE stat_buckets DROP COLUMN latency_n;
