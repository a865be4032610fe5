-- A task's calls each hold for themselves: the gateway's fallback attempt reserves for its own model
-- before it is called, after the failed attempt's cost settled the first hold. A reservation is
-- now one attempt of a task (the selector's is attempt 1), settled by that attempt's cost.
ALTER TABLE reservation_holds DROP CONSTRAINT reservation_holds_task_id_fkey;
ALTER TABLE reservations ADD COLUMN attempt int NOT NULL DEFAULT 1 CHECK (attempt BETWEEN 1 AND 20);
ALTER TABLE reservations DROP CONSTRAINT reservations_pkey, ADD PRIMARY KEY (task_id, attempt);
ALTER TABLE reservation_holds ADD COLUMN attempt int NOT NULL DEFAULT 1;
ALTER TABLE reservation_holds DROP CONSTRAINT reservation_holds_pkey, ADD PRIMARY KEY (task_id, attempt, budget_id);
ALTER TABLE reservation_holds ADD FOREIGN KEY (task_id, attempt) REFERENCES reservations ON DELETE CASCADE;
