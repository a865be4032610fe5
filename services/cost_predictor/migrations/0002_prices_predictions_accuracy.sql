-- Deployment price overrides (USD per million tokens) and who changed them.
CREATE TABLE price_overrides (
    provider text NOT NULL,
    model text NOT NULL,
    input_mtok numeric(20, 12) NOT NULL CHECK (input_mtok >= 0),
    output_mtok numeric(20, 12) NOT NULL CHECK (output_mtok >= 0),
    cache_read_mtok numeric(20, 12) CHECK (cache_read_mtok >= 0),
    cache_write_mtok numeric(20, 12) CHECK (cache_write_mtok >= 0),
    context_window int CHECK (context_window > 0),
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model)
);

CREATE TABLE price_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL CHECK (action IN ('set', 'remove')),
    provider text NOT NULL,
    model text NOT NULL,
    before jsonb,
    after jsonb
);

-- Learned output tokens per (task type, model): a decayed log-bucket histogram of constant size.
CREATE TABLE output_profiles (
    task_type text NOT NULL,
    model text NOT NULL,
    counts double precision[] NOT NULL,
    observations bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_type, model)
);

-- The estimate given for a task (every model asked about), kept to compare with its actual cost.
CREATE TABLE estimates (
    task_id uuid PRIMARY KEY,
    task_type text NOT NULL,
    predictions jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Estimate vs actual, one row per CostRecorded whose task had an estimate for the model that ran.
CREATE TABLE estimate_errors (
    event_id uuid PRIMARY KEY,
    task_id uuid NOT NULL,
    task_type text NOT NULL,
    model text NOT NULL,
    predicted_output_p50 int NOT NULL,
    predicted_output_p90 int NOT NULL,
    actual_output int NOT NULL,
    predicted_cost_usd numeric(20, 12) NOT NULL,
    actual_cost_usd numeric(20, 12) NOT NULL,
    recorded_at timestamptz NOT NULL
);
CREATE INDEX estimate_errors_model ON estimate_errors (model, task_type);

-- The raw usage log is superseded by output_profiles and estimate_errors.
DROP TABLE observed_usage;
