-- Every provider call the gateway makes for a task: one row per attempt (the fallback chain's
-- next model is attempt 2, ...), written in the transaction that also puts the attempt's
-- CostRecorded in the outbox: an answer returned to a client is never a lost cost.
CREATE TABLE attempts (
    task_id uuid NOT NULL,
    attempt int NOT NULL CHECK (attempt >= 1),
    model text NOT NULL,
    provider text NOT NULL,
    provider_model text NOT NULL,
    status text NOT NULL CHECK (status IN ('ok', 'failed')),
    http_status int,
    error_type text,
    error_detail text,
    retryable boolean NOT NULL DEFAULT false,
    stream boolean NOT NULL DEFAULT false,
    latency_ms double precision NOT NULL CHECK (latency_ms >= 0),
    ttft_ms double precision CHECK (ttft_ms >= 0),
    input_tokens int,
    output_tokens int,
    cached_input_tokens int,
    usage_source text CHECK (usage_source IN ('provider', 'tokenizer')),
    cost_usd numeric(30, 12) NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    cost_event_id uuid,
    org_id text NOT NULL,
    scope jsonb NOT NULL,
    task_type text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, attempt)
);

CREATE INDEX attempts_created_at ON attempts (created_at);
