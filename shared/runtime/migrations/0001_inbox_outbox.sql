-- Every service schema gets an inbox (event ids already applied) and an outbox
-- (events to publish, written in the same transaction as the state they describe).
CREATE TABLE inbox (
    event_id uuid PRIMARY KEY,
    subject text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    subject text NOT NULL,
    payload bytea NOT NULL,
    headers jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
