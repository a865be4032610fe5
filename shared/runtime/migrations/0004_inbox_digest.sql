-- What each applied event said (a digest of its canonical payload): a later event with the same id
-- but another payload is a conflicting duplicate, dropped as a replay would be, but logged and counted.
ALTER TABLE inbox ADD COLUMN digest bytea;
