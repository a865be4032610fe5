-- API keys: each charges its scope (an org, optionally a team and a user in it). Only the key's
-- SHA-256 is kept (the key is shown once, at creation); the id is the key's public part.
CREATE TABLE api_keys (
    id text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
    key_hash bytea NOT NULL CHECK (octet_length(key_hash) = 32),
    name text,
    org_id text NOT NULL,
    team_id text,
    user_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    last_used_at timestamptz,
    revoked_at timestamptz,
    revoked_by text
);
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at DESC);
