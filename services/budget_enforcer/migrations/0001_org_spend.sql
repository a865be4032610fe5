-- Every recorded cost, once, and the running total per org.
CREATE TABLE spend_ledger (
    event_id uuid PRIMARY KEY,
    task_id uuid NOT NULL,
    org_id text NOT NULL,
    team_id text,
    user_id text,
    workspace_id text,
    model text NOT NULL,
    cost_usd numeric(20, 12) NOT NULL CHECK (cost_usd >= 0),
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spend_ledger_org ON spend_ledger (org_id, occurred_at);

CREATE TABLE org_spend (
    org_id text PRIMARY KEY,
    spent_usd numeric(20, 12) NOT NULL DEFAULT 0,
    costs_recorded int NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
