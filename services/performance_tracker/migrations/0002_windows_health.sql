-- Statistics in time buckets (minute, hour, all-time) per dimension: the model overall
-- (dim 'model', key ''), per task type (dim 'task_type') and per pattern (dim 'pattern').
-- Work per outcome is a fixed number of upserts, however long the history.
CREATE TABLE stat_buckets (
    dim text NOT NULL,
    key text NOT NULL,
    model text NOT NULL,
    granularity text NOT NULL,
    bucket_start timestamptz NOT NULL,
    requests int NOT NULL DEFAULT 0,
    successes int NOT NULL DEFAULT 0,
    success_latency_ms double precision NOT NULL DEFAULT 0,
    latency_n int NOT NULL DEFAULT 0,
    output_tokens_timed bigint NOT NULL DEFAULT 0,
    cost_usd numeric(20, 12) NOT NULL DEFAULT 0,
    quality_sum double precision NOT NULL DEFAULT 0,
    quality_sq_sum double precision NOT NULL DEFAULT 0,
    quality_n int NOT NULL DEFAULT 0,
    PRIMARY KEY (model, dim, key, granularity, bucket_start)
);

CREATE TABLE latency_buckets (
    dim text NOT NULL,
    key text NOT NULL,
    model text NOT NULL,
    granularity text NOT NULL,
    bucket_start timestamptz NOT NULL,
    idx int NOT NULL,
    n int NOT NULL,
    PRIMARY KEY (model, dim, key, granularity, bucket_start, idx)
);

CREATE TABLE error_buckets (
    dim text NOT NULL,
    key text NOT NULL,
    model text NOT NULL,
    granularity text NOT NULL,
    bucket_start timestamptz NOT NULL,
    error_type text NOT NULL,
    n int NOT NULL,
    PRIMARY KEY (model, dim, key, granularity, bucket_start, error_type)
);

-- The pattern the selector saw in each task (from ModelSelected), and each task's outcome
-- (where late feedback must add its quality).
CREATE TABLE task_patterns (
    task_id uuid PRIMARY KEY,
    pattern text NOT NULL,
    task_type text NOT NULL
);

CREATE TABLE outcomes (
    task_id uuid NOT NULL,
    model text NOT NULL,
    task_type text NOT NULL,
    pattern text NOT NULL,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (task_id, model)
);

CREATE TABLE model_health (
    model text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('healthy', 'demoted', 'probation')),
    since timestamptz NOT NULL,
    reason text NOT NULL,
    probation_successes int NOT NULL DEFAULT 0
);

-- Feedback now lands in the buckets of its task's outcome; the per-model counters before
-- windows existed are no longer needed.
ALTER TABLE feedback ADD COLUMN applied boolean NOT NULL DEFAULT false;
DROP TABLE model_stats;
