-- What of a task's actual cost was self-priced (accepted on the application's word, see
-- ROUTEWISE_ALLOW_SELF_PRICED), and how many adjustments (CostAdjusted) changed its cost.
ALTER TABLE task_ledger
    ADD COLUMN self_priced_cost_usd numeric(30, 12),
    ADD COLUMN cost_adjustments int NOT NULL DEFAULT 0;
