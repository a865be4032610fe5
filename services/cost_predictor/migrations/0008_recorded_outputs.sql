-- What a recorded cost's call answered (its output tokens, whether it succeeded) and the catalog
-- model it was learnt under: a decision's estimate kept after its cost came (the estimate now
-- arrives with ModelSelected) is still compared with it.
ALTER TABLE recorded_costs
    ADD COLUMN output_tokens int CHECK (output_tokens >= 0),
    ADD COLUMN success boolean,
    ADD COLUMN learnt_model text;
