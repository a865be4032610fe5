-- Routing policies: which models a kind of task may use, the first being what it would use
-- without routing (the baseline).
CREATE TABLE routing_policies (
    name text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    models text[] NOT NULL CHECK (cardinality(models) > 0),
    max_cost_per_task_usd numeric(20, 12) CHECK (max_cost_per_task_usd > 0),
    max_tokens integer CHECK (max_tokens > 0),
    updated_by text NOT NULL DEFAULT 'routewise',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Task type → policy. A task type not listed uses the policy 'normal'.
CREATE TABLE task_type_policies (
    task_type text PRIMARY KEY,
    policy text NOT NULL REFERENCES routing_policies (name)
);

INSERT INTO routing_policies (name, description, models, max_cost_per_task_usd, max_tokens) VALUES
    ('normal', 'Balanced cost and quality for general tasks, analysis and reporting',
     ARRAY['gpt-4.1', 'gpt-5-nano', 'gemini-2.0-flash-lite', 'gpt-4o-mini', 'gemini-2.5-flash-lite',
           'claude-haiku-4-5', 'gpt-5-mini', 'gemini-2.5-flash', 'deepseek-chat', 'gpt-4o',
           'claude-sonnet-4-5', 'gpt-5', 'gemini-2.5-pro'], 0.10, 4000),
    ('deep_research', 'Maximum intelligence for complex analysis and strategic decisions',
     ARRAY['claude-opus-4-1', 'gpt-5', 'gemini-2.5-pro', 'claude-sonnet-4-5', 'gpt-4.1', 'gpt-5-mini',
           'gemini-2.5-flash'], 1.00, 16000),
    ('code', 'Models that code well, for investigation, debugging and fixes',
     ARRAY['claude-sonnet-4-5', 'gpt-5-nano', 'gpt-4o-mini', 'claude-haiku-4-5', 'gpt-5-mini',
           'gemini-2.5-flash', 'deepseek-chat', 'gpt-4.1', 'gpt-5', 'gemini-2.5-pro', 'claude-opus-4-1'],
     0.50, 8000),
    ('ops', 'Ultra-cheap models for simple queries, status checks and formatting',
     ARRAY['gpt-4o-mini', 'gpt-5-nano', 'gemini-2.0-flash-lite', 'gemini-2.5-flash-lite', 'claude-haiku-4-5'],
     0.01, 1000);

INSERT INTO task_type_policies (task_type, policy) VALUES
    ('investigate_error', 'code'),
    ('fix_bug', 'code'),
    ('deploy_code', 'code'),
    ('code', 'code'),
    ('analyze_logs', 'normal'),
    ('simple_query', 'ops'),
    ('ops', 'ops'),
    ('research', 'deep_research'),
    ('deep_research', 'deep_research');

-- A workspace's tier preferences (no row: the defaults).
CREATE TABLE tier_preferences (
    workspace_id text PRIMARY KEY,
    preferences jsonb NOT NULL,
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What the learner needs to learn from a task's feedback: the prompt's features, kept at
-- decision time (the prompt itself is not stored).
CREATE TABLE task_features (
    task_id uuid PRIMARY KEY,
    task_type text NOT NULL,
    pattern text NOT NULL,
    complexity double precision NOT NULL,
    features bigint[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The text learner: per model, a logistic model of answer quality over hashed prompt features,
-- learnt online from feedback (AdaGrad). ``version`` grows with every update so each replica
-- reloads only what changed; updates of a model are serialised by its learner_models row lock.
CREATE TABLE learner_models (
    model text PRIMARY KEY,
    bias double precision NOT NULL DEFAULT 0,
    bias_g double precision NOT NULL DEFAULT 0,
    examples bigint NOT NULL DEFAULT 0,
    version bigint NOT NULL DEFAULT 0
);

CREATE TABLE learner_weights (
    model text NOT NULL REFERENCES learner_models (model),
    feature bigint NOT NULL,
    w double precision NOT NULL,
    g double precision NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (model, feature)
);
CREATE INDEX learner_weights_version ON learner_weights (model, version);
