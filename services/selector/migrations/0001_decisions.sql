-- Every decision the selector made, one per task.
CREATE TABLE decisions (
    task_id uuid PRIMARY KEY,
    arrived_event_id uuid NOT NULL,
    status text NOT NULL CHECK (status IN ('selected', 'rejected')),
    org_id text NOT NULL,
    scope jsonb NOT NULL,
    task_type text NOT NULL,
    model text,
    provider text,
    tier text,
    estimated_cost_usd numeric(20, 12),
    reason text,
    outcome_event jsonb NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now()
);
