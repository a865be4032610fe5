-- One row per task, filled in by whichever of its events arrives (in any order).
CREATE TABLE task_ledger (
    task_id uuid PRIMARY KEY,
    org_id text NOT NULL,
    task_type text NOT NULL,
    status text CHECK (status IN ('selected', 'rejected')),
    rejection_reason text,
    model text,
    provider text,
    tier text,
    strategy text,
    estimated_cost_usd numeric(20, 12),
    baseline_model text,
    baseline_cost_usd numeric(20, 12),
    actual_model text,
    actual_cost_usd numeric(20, 12),
    input_tokens int,
    output_tokens int,
    decided_at timestamptz,
    cost_recorded_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_ledger_org ON task_ledger (org_id, created_at);
