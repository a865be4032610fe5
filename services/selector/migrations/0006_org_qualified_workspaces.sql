-- A workspace is named within its org (acme/research): another org's workspace of the same name has
-- its own preferences. Preferences stored under a bare name applied to that name in every org: each
-- becomes one row per org that has decisions (left as it was when none has; then it applies to no
-- task until set again as ORG/ID).
INSERT INTO tier_preferences (workspace_id, preferences, updated_by, updated_at)
SELECT o.org_id || '/' || p.workspace_id,
       jsonb_set(p.preferences, '{workspace_id}', to_jsonb(o.org_id || '/' || p.workspace_id)),
       p.updated_by, p.updated_at
FROM tier_preferences p CROSS JOIN (SELECT DISTINCT org_id FROM decisions) o
WHERE position('/' IN p.workspace_id) = 0
ON CONFLICT (workspace_id) DO NOTHING;
DELETE FROM tier_preferences p
WHERE position('/' IN p.workspace_id) = 0 AND EXISTS (SELECT 1 FROM decisions);
