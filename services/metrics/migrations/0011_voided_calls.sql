-- A voided call (CostAdjusted with void) was not a call for the reports: it leaves the task's
-- count of calls and its tokens (so the baseline is priced at the calls that stand), and a task
-- left without a call is out of the savings. Each call's tokens are kept to take them out, and to
-- put them back if a later adjustment gives the call a cost again (NULL: recorded before this).
ALTER TABLE cost_ledger
    ADD COLUMN input_tokens bigint,
    ADD COLUMN output_tokens bigint,
    ADD COLUMN cached_input_tokens bigint,
    ADD COLUMN void boolean NOT NULL DEFAULT false;
