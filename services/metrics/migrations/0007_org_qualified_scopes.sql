-- A team, user or workspace is named within its org (acme/platform): reports of one select it by
-- (org, id), so each scope kind's index leads with the org.
DROP INDEX task_ledger_team_reported;
DROP INDEX task_ledger_user_reported;
DROP INDEX task_ledger_workspace_reported;
CREATE INDEX task_ledger_team_reported ON task_ledger (org_id, team_id, reported_at) WHERE team_id IS NOT NULL;
CREATE INDEX task_ledger_user_reported ON task_ledger (org_id, user_id, reported_at) WHERE user_id IS NOT NULL;
CREATE INDEX task_ledger_workspace_reported ON task_ledger (org_id, workspace_id, reported_at)
    WHERE workspace_id IS NOT NULL;
