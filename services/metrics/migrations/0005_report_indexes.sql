-- A task rejected, then approved and selected, keeps its rejection: the report counts both.
ALTER TABLE task_ledger ADD COLUMN rejected_at timestamptz;
UPDATE task_ledger SET rejected_at = decided_at WHERE status = 'rejected';

-- Reports select a period on one column (decision time, else arrival, else first sight), so
-- an index range scan reads only the period's rows however long the ledger grows; each scope
-- kind has its own index for reports of one org, team, user or workspace.
ALTER TABLE task_ledger
    ADD COLUMN reported_at timestamptz GENERATED ALWAYS AS (coalesce(decided_at, arrived_at, created_at)) STORED;
DROP INDEX task_ledger_decided;
DROP INDEX task_ledger_org;
CREATE INDEX task_ledger_reported ON task_ledger (reported_at);
CREATE INDEX task_ledger_org_reported ON task_ledger (org_id, reported_at);
CREATE INDEX task_ledger_team_reported ON task_ledger (team_id, reported_at) WHERE team_id IS NOT NULL;
CREATE INDEX task_ledger_user_reported ON task_ledger (user_id, reported_at) WHERE user_id IS NOT NULL;
CREATE INDEX task_ledger_workspace_reported ON task_ledger (workspace_id, reported_at) WHERE workspace_id IS NOT NULL;

-- The baseline-pricing sweeper looks for rows whose tokens changed since they were priced; an
-- index of exactly those rows keeps its once-a-second look constant-time as the ledger grows.
DROP INDEX task_ledger_to_price;
CREATE INDEX task_ledger_to_price ON task_ledger (cost_recorded_at)
    WHERE baseline_model IS NOT NULL AND input_tokens IS NOT NULL
      AND baseline_priced_tokens IS DISTINCT FROM
          ARRAY[input_tokens, output_tokens, coalesce(cached_input_tokens, 0)]::bigint[];
