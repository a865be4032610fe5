-- A key's role, besides its scope: admin (manages its scope), member (routes, records feedback,
-- reads its scope) or viewer (reads only). Keys made before roles existed become members: they
-- keep doing what they did (calls and feedback) and manage nothing.
ALTER TABLE api_keys ADD COLUMN role text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member', 'viewer'));
