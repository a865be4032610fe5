-- The baseline's price at the task's real tokens is fetched after the events are applied (a
-- sweeper, so no event waits on cost-predictor): these record which token counts it priced,
-- and why it could not be priced.
ALTER TABLE task_ledger
    ADD COLUMN baseline_priced_tokens bigint[],
    ADD COLUMN baseline_price_error text;
CREATE INDEX task_ledger_to_price ON task_ledger (cost_recorded_at)
    WHERE baseline_model IS NOT NULL AND input_tokens IS NOT NULL;
