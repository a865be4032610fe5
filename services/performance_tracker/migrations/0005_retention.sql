-- Raw outcomes, feedback and task patterns are kept for task_retention_days (the statistics live
-- on in the buckets), then pruned.
ALTER TABLE task_patterns ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX task_patterns_created_at ON task_patterns USING brin (created_at);
CREATE INDEX outcomes_occurred_at ON outcomes USING brin (occurred_at);
CREATE INDEX feedback_occurred_at ON feedback USING brin (occurred_at);
