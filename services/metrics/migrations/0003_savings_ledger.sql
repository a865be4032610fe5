-- What the savings and routing reports need per task: who asked, how it was decided, what the
-- baseline would have cost at the task's real token counts, and how good the answer was.
ALTER TABLE task_ledger
    ADD COLUMN team_id text,
    ADD COLUMN user_id text,
    ADD COLUMN workspace_id text,
    ADD COLUMN arrived_at timestamptz,
    ADD COLUMN policy text,
    ADD COLUMN pattern text,
    ADD COLUMN confidence double precision,
    ADD COLUMN experimental boolean,
    ADD COLUMN fallback_reason text,
    ADD COLUMN cached_input_tokens int,
    ADD COLUMN baseline_actual_cost_usd numeric(20, 12),
    ADD COLUMN quality double precision,
    ADD COLUMN quality_at timestamptz;

-- Reports filter by time (a period of days) within an org; rollups are the next step if this
-- index stops being enough.
CREATE INDEX task_ledger_decided ON task_ledger (org_id, decided_at);
