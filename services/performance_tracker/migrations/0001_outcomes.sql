-- Counters per model, and the latest quality feedback per task (the last one wins).
CREATE TABLE model_stats (
    model text PRIMARY KEY,
    provider text NOT NULL,
    requests int NOT NULL DEFAULT 0,
    successes int NOT NULL DEFAULT 0,
    failures int NOT NULL DEFAULT 0,
    latency_ms_sum double precision NOT NULL DEFAULT 0,
    latency_samples int NOT NULL DEFAULT 0,
    output_tokens_sum bigint NOT NULL DEFAULT 0,
    cost_usd_sum numeric(20, 12) NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE feedback (
    task_id uuid NOT NULL,
    model text NOT NULL,
    quality double precision NOT NULL CHECK (quality BETWEEN 0 AND 1),
    occurred_at timestamptz NOT NULL,
    event_id uuid NOT NULL,
    PRIMARY KEY (task_id, model)
);
