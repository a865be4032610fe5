-- What calls really used, per task: the raw material for output-token prediction.
CREATE TABLE observed_usage (
    event_id uuid PRIMARY KEY,
    task_id uuid NOT NULL,
    task_type text NOT NULL,
    model text NOT NULL,
    input_tokens int NOT NULL,
    output_tokens int NOT NULL,
    cost_usd numeric(20, 12) NOT NULL,
    recorded_at timestamptz NOT NULL
);
CREATE INDEX observed_usage_model ON observed_usage (task_type, model);
