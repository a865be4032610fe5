-- An outbox row that fails to publish is retried later without holding back the rows after it.
ALTER TABLE outbox ADD COLUMN attempts int NOT NULL DEFAULT 0, ADD COLUMN last_error text;
