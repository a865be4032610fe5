-- A model's snapshot version: bumped with every change to its statistics or health, so the
-- newest snapshot wins in the KV bucket whichever replica writes it.
ALTER TABLE model_health ADD COLUMN version bigint NOT NULL DEFAULT 0;
