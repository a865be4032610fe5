-- The response cache (opt-in, exact match): one stored answer per (org, key), the key a SHA-256 of
-- the org, the resolved target, the messages and every parameter that changes the answer. The org
-- is in the key and in its own column, checked on every read: one org never reads another's.
CREATE TABLE response_cache (
    org_id text NOT NULL,
    cache_key bytea NOT NULL CHECK (octet_length(cache_key) = 32),
    answer jsonb NOT NULL,
    model text NOT NULL,
    provider text NOT NULL,
    input_tokens int NOT NULL CHECK (input_tokens >= 0),
    output_tokens int NOT NULL CHECK (output_tokens >= 0),
    cached_input_tokens int NOT NULL DEFAULT 0 CHECK (cached_input_tokens >= 0),
    cost_usd numeric(30, 12) NOT NULL CHECK (cost_usd >= 0),
    source_task_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    hits bigint NOT NULL DEFAULT 0,
    last_hit_at timestamptz,
    PRIMARY KEY (org_id, cache_key)
);
CREATE INDEX response_cache_expires_at ON response_cache (expires_at);

-- Each task answered from the cache (no provider call, no attempt): what it was served, for
-- feedback on it and for the record; its CostRecorded (cached, $0, the avoided cost) is put in
-- the outbox in the same transaction.
CREATE TABLE cache_hits (
    task_id uuid PRIMARY KEY,
    org_id text NOT NULL,
    scope jsonb NOT NULL,
    task_type text NOT NULL,
    cache_key bytea NOT NULL,
    model text NOT NULL,
    provider text NOT NULL,
    stream boolean NOT NULL DEFAULT false,
    avoided_cost_usd numeric(30, 12) NOT NULL CHECK (avoided_cost_usd >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cache_hits_created_at ON cache_hits (created_at);
