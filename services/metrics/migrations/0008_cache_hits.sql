-- A task the gateway answered from its response cache: no call, $0, and what its answer cost when
-- it was made (the cost the hit avoided), for the report's cache figures.
ALTER TABLE task_ledger
    ADD COLUMN cached boolean NOT NULL DEFAULT false,
    ADD COLUMN avoided_cost_usd numeric(30, 12);
