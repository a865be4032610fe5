-- Models registered at run time (routewise models register): they add to the shipped catalog
-- file and replace a shipped model of the same id. Their prices are price_overrides rows.
CREATE TABLE registered_models (
    id text PRIMARY KEY,
    provider text NOT NULL,
    tier text NOT NULL CHECK (tier IN ('micro', 'standard', 'versatile', 'heavy', 'complex')),
    quality_prior double precision NOT NULL CHECK (quality_prior BETWEEN 0 AND 1),
    context_window int NOT NULL CHECK (context_window > 0),
    capabilities text[] NOT NULL DEFAULT '{}',
    price_ref text,
    registered_by text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- Who registered, replaced or removed which model, and what it was before and after.
CREATE TABLE model_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL CHECK (action IN ('register', 'remove')),
    model text NOT NULL,
    before jsonb,
    after jsonb
);

-- The catalog's revision: one more with each registration, removal and price change, in the
-- change's transaction. The published catalog carries it; a replica behind it reloads.
CREATE TABLE catalog_revision (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    revision bigint NOT NULL CHECK (revision > 0)
);
INSERT INTO catalog_revision (revision) VALUES (1);
