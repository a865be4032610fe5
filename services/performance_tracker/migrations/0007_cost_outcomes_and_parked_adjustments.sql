-- Each call counted (by its cost's event id): where an adjustment of its cost moves the cost
-- statistics (its model, task type, pattern and time), and how many of its adjustments are applied.
-- Kept for task_retention_days, as the raw outcomes; an adjustment that comes early is parked.
CREATE TABLE cost_outcomes (
    event_id uuid PRIMARY KEY,
    task_id uuid NOT NULL,
    model text NOT NULL,
    task_type text NOT NULL,
    pattern text NOT NULL,
    occurred_at timestamptz NOT NULL,
    adjustments int NOT NULL DEFAULT 0
);
CREATE INDEX cost_outcomes_occurred_at ON cost_outcomes USING brin (occurred_at);

CREATE TABLE parked_adjustments (
    event_id uuid PRIMARY KEY,
    cost_event_id uuid NOT NULL,
    sequence int NOT NULL,
    payload jsonb NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parked_adjustments_cost ON parked_adjustments (cost_event_id, sequence);
CREATE INDEX parked_adjustments_parked_at ON parked_adjustments USING brin (parked_at);
