-- Each recorded cost applied here, and how many of its adjustments are: an adjustment applies
-- after its cost and the adjustments before it; one that comes early is parked until then.
CREATE TABLE cost_ledger (
    event_id uuid PRIMARY KEY,
    task_id uuid NOT NULL,
    adjustments int NOT NULL DEFAULT 0,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE parked_adjustments (
    event_id uuid PRIMARY KEY,
    cost_event_id uuid NOT NULL,
    sequence int NOT NULL,
    payload jsonb NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parked_adjustments_cost ON parked_adjustments (cost_event_id, sequence);
CREATE INDEX parked_adjustments_parked_at ON parked_adjustments USING brin (parked_at);
