-- Money sums cannot overflow: every amount is numeric(30, 12) (up to 10^18 USD), as the contracts'
-- Usd; a single call's cost is bounded far below by the contract (10,000 USD).
ALTER TABLE spend_ledger ALTER COLUMN cost_usd TYPE numeric(30, 12);
ALTER TABLE budgets ALTER COLUMN limit_usd TYPE numeric(30, 12),
    ALTER COLUMN max_cost_per_request TYPE numeric(30, 12);
ALTER TABLE budget_periods ALTER COLUMN spent_usd TYPE numeric(30, 12),
    ALTER COLUMN reserved_usd TYPE numeric(30, 12);
ALTER TABLE reservations ALTER COLUMN amount_usd TYPE numeric(30, 12);
ALTER TABLE reservation_holds ALTER COLUMN amount_usd TYPE numeric(30, 12);
ALTER TABLE budget_charges ALTER COLUMN amount_usd TYPE numeric(30, 12);
ALTER TABLE extensions ALTER COLUMN amount_usd TYPE numeric(30, 12);
ALTER TABLE scope_spend ALTER COLUMN spent_usd TYPE numeric(30, 12);
