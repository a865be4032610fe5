-- An approval lifts the approval gates of the budgets its approver's scope holds: an API key's
-- scope (the gateway's), or JSON null for the operator (the CLI on the bus), who lifts every gate —
-- as every approval made before this did. A task may have one approval per approver scope: a team
-- admin's lifts its team's gate, an org admin's the org's too.
ALTER TABLE approvals ADD COLUMN approver_scope jsonb NOT NULL DEFAULT 'null'::jsonb;
ALTER TABLE approvals DROP CONSTRAINT approvals_pkey, ADD PRIMARY KEY (task_id, approver_scope);
