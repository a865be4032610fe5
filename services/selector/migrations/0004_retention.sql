-- A selected task's prompt features are kept for task_retention_days (feedback after that is not
-- learnt), then pruned: a block range index finds the old rows without cost on the insert path.
CREATE INDEX task_features_created_at ON task_features USING brin (created_at);
