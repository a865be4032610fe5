-- Retention: applied event ids and published outbox rows older than their retention are pruned
-- (see shared/runtime/retention.py). BRIN indexes: rows arrive in time order, so a block range index
-- finds the old ones for a few pages of index and no extra work on the hot insert path.
CREATE INDEX inbox_applied_at ON inbox USING brin (applied_at);
CREATE INDEX outbox_published_at ON outbox USING brin (published_at);
