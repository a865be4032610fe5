-- A recorded cost can be corrected or voided (CostAdjusted): the ledger and the budgets' charges
-- keep its current amount, and how many of its adjustments were applied (they apply in order).
ALTER TABLE spend_ledger ADD COLUMN adjustments int NOT NULL DEFAULT 0;
