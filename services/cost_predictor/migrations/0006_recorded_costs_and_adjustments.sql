-- Every recorded cost (the gateway's, and the reported ones cost-predictor accepted) as it stands
-- after its adjustments: what an adjustment is checked against and computes its delta from. Kept
-- like budget-enforcer's spend ledger (no retention): a correction may come at the month's close.
CREATE TABLE recorded_costs (
    event_id uuid PRIMARY KEY,
    task_id uuid NOT NULL,
    attempt int NOT NULL CHECK (attempt BETWEEN 1 AND 20),
    org_id text NOT NULL,
    team_id text,
    user_id text,
    workspace_id text,
    task_type text NOT NULL,
    model text NOT NULL,
    provider text NOT NULL,
    cost_usd numeric(30, 12) NOT NULL CHECK (cost_usd >= 0),
    recorded_cost_usd numeric(30, 12) NOT NULL CHECK (recorded_cost_usd >= 0),
    self_priced boolean NOT NULL DEFAULT false,
    adjustments int NOT NULL DEFAULT 0,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recorded_costs_task ON recorded_costs (task_id, attempt);

-- Each adjustment (a correction or a void), who made it and why, with the cost before and after:
-- the audit of CostAdjusted (its event_id is the adjustment's id).
CREATE TABLE cost_adjustments (
    id uuid PRIMARY KEY,
    cost_event_id uuid NOT NULL REFERENCES recorded_costs,
    sequence int NOT NULL CHECK (sequence >= 1),
    task_id uuid NOT NULL,
    attempt int NOT NULL,
    org_id text NOT NULL,
    actor text NOT NULL,
    reason text NOT NULL,
    before_usd numeric(30, 12) NOT NULL,
    after_usd numeric(30, 12) NOT NULL,
    void boolean NOT NULL,
    at timestamptz NOT NULL,
    UNIQUE (cost_event_id, sequence)
);
CREATE INDEX cost_adjustments_task ON cost_adjustments (task_id, at);
CREATE INDEX cost_adjustments_at ON cost_adjustments (at);
