-- Budgets per scope, their spend per period, reservations (holds), alerts, approvals,
-- extensions and an audit log. Spend per scope (user, team, workspace, org) replaces org_spend.
CREATE TABLE budgets (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    scope_type text NOT NULL CHECK (scope_type IN ('org', 'team', 'user', 'workspace')),
    scope_id text NOT NULL,
    period text NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly', 'quarterly', 'total')),
    timezone text NOT NULL,
    starts_at timestamptz NOT NULL,
    limit_usd numeric(20, 12) NOT NULL CHECK (limit_usd > 0),
    hard boolean NOT NULL,
    max_cost_per_request numeric(20, 12) CHECK (max_cost_per_request > 0),
    thresholds jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX budgets_scope ON budgets (scope_type, scope_id);

-- Spend and holds of one budget in one period (the row a reservation locks and updates).
CREATE TABLE budget_periods (
    budget_id uuid NOT NULL REFERENCES budgets ON DELETE CASCADE,
    period_start timestamptz NOT NULL,
    period_end timestamptz,
    spent_usd numeric(20, 12) NOT NULL DEFAULT 0 CHECK (spent_usd >= 0),
    reserved_usd numeric(20, 12) NOT NULL DEFAULT 0 CHECK (reserved_usd >= 0),
    costs_recorded int NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (budget_id, period_start)
);

CREATE TABLE reservations (
    task_id uuid PRIMARY KEY,
    reservation_id uuid NOT NULL UNIQUE,
    model text NOT NULL,
    amount_usd numeric(20, 12) NOT NULL,
    status text NOT NULL CHECK (status IN ('held', 'settled', 'released', 'expired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    closed_at timestamptz
);
CREATE INDEX reservations_expiring ON reservations (expires_at) WHERE status = 'held';

CREATE TABLE reservation_holds (
    task_id uuid NOT NULL REFERENCES reservations ON DELETE CASCADE,
    budget_id uuid NOT NULL REFERENCES budgets ON DELETE CASCADE,
    period_start timestamptz NOT NULL,
    amount_usd numeric(20, 12) NOT NULL,
    PRIMARY KEY (task_id, budget_id)
);

-- Which budgets each recorded cost was charged to.
CREATE TABLE budget_charges (
    event_id uuid NOT NULL,
    budget_id uuid NOT NULL REFERENCES budgets ON DELETE CASCADE,
    period_start timestamptz NOT NULL,
    amount_usd numeric(20, 12) NOT NULL,
    PRIMARY KEY (event_id, budget_id)
);

-- Exactly one alert per (budget, period, threshold).
CREATE TABLE alerts_fired (
    budget_id uuid NOT NULL REFERENCES budgets ON DELETE CASCADE,
    period_start timestamptz NOT NULL,
    threshold int NOT NULL,
    alert_event_id uuid NOT NULL,
    cause_event_id uuid,
    fired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (budget_id, period_start, threshold)
);

CREATE TABLE approvals (
    task_id uuid PRIMARY KEY,
    actor text NOT NULL,
    reason text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE extensions (
    id uuid PRIMARY KEY,
    budget_id uuid NOT NULL REFERENCES budgets ON DELETE CASCADE,
    amount_usd numeric(20, 12) NOT NULL CHECK (amount_usd > 0),
    expires_at timestamptz NOT NULL,
    reason text NOT NULL,
    actor text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX extensions_budget ON extensions (budget_id, expires_at);

CREATE TABLE budget_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    budget_id uuid,
    task_id uuid,
    before jsonb,
    after jsonb
);

-- Spend per scope, whatever budgets exist: a user's cost also counts on its team and org.
CREATE TABLE scope_spend (
    scope_type text NOT NULL,
    scope_id text NOT NULL,
    spent_usd numeric(20, 12) NOT NULL DEFAULT 0,
    costs_recorded int NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope_type, scope_id)
);
INSERT INTO scope_spend (scope_type, scope_id, spent_usd, costs_recorded)
    SELECT 'org', org_id, spent_usd, costs_recorded FROM org_spend;
DROP TABLE org_spend;
