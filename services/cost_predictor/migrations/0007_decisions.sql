-- The decisions (ModelSelected) cost-predictor has seen: a cost an application reports is recorded
-- only for a task decided in its org, and for a model of that decision (the chosen one or its
-- fallbacks). Kept for task_retention_days after the decision, like the estimates.
CREATE TABLE decisions (
    task_id uuid PRIMARY KEY,
    org_id text NOT NULL,
    models text[] NOT NULL,
    decided_at timestamptz NOT NULL
);
CREATE INDEX decisions_decided_at ON decisions USING brin (decided_at);
