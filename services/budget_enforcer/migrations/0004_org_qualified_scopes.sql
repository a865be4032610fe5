-- Team, user and workspace ids are unique within their org only. A scope's identity is now its
-- org-qualified path (team "platform" of org "acme" is "acme/platform"), so one org's hard budget on
-- its team no longer refuses another org's team of the same name.

-- Spend per scope, recomputed from the ledger, which keeps each cost's org.
DELETE FROM scope_spend WHERE scope_type <> 'org';
INSERT INTO scope_spend (scope_type, scope_id, spent_usd, costs_recorded)
SELECT k.scope_type, l.org_id || '/' || k.local_id, sum(l.cost_usd), count(*)
FROM spend_ledger l
CROSS JOIN LATERAL (VALUES ('team', l.team_id), ('user', l.user_id), ('workspace', l.workspace_id))
    AS k(scope_type, local_id)
WHERE k.local_id IS NOT NULL
GROUP BY 1, 2;

-- A budget on a team, user or workspace applied to that name in every org. It becomes one budget
-- per org it was charged for (never charged: per org known), each with its own charges and spend;
-- the first org keeps the budget's id. With no org known at all it stays as it was (the service
-- warns at start: it applies to no task until recreated with ORG/ID).
DO $$
DECLARE
    b record;
    orgs text[];
    org text;
    target uuid;
    targets uuid[];
BEGIN
    FOR b IN SELECT * FROM budgets WHERE scope_type <> 'org' AND position('/' IN scope_id) = 0 ORDER BY id LOOP
        EXECUTE format('SELECT array_agg(DISTINCT org_id ORDER BY org_id) FROM spend_ledger WHERE %I = $1',
                       b.scope_type || '_id') INTO orgs USING b.scope_id;
        IF orgs IS NULL THEN
            SELECT array_agg(o ORDER BY o) INTO orgs FROM (
                SELECT org_id AS o FROM spend_ledger UNION SELECT scope_id FROM budgets WHERE scope_type = 'org') k;
        END IF;
        CONTINUE WHEN orgs IS NULL;
        targets := '{}';
        FOREACH org IN ARRAY orgs LOOP
            IF org = orgs[1] THEN
                target := b.id;
                UPDATE budgets SET scope_id = org || '/' || b.scope_id, updated_at = now() WHERE id = b.id;
            ELSE
                target := gen_random_uuid();
                INSERT INTO budgets (id, name, scope_type, scope_id, period, timezone, starts_at, limit_usd, hard,
                                     max_cost_per_request, thresholds, created_at, updated_at)
                VALUES (target, b.name, b.scope_type, org || '/' || b.scope_id, b.period, b.timezone, b.starts_at,
                        b.limit_usd, b.hard, b.max_cost_per_request, b.thresholds, b.created_at, now());
                INSERT INTO extensions (id, budget_id, amount_usd, expires_at, reason, actor, created_at)
                SELECT gen_random_uuid(), target, amount_usd, expires_at, reason, actor, created_at
                FROM extensions WHERE budget_id = b.id;
                UPDATE budget_charges c SET budget_id = target FROM spend_ledger l
                WHERE c.budget_id = b.id AND l.event_id = c.event_id AND l.org_id = org;
                INSERT INTO budget_periods (budget_id, period_start, period_end, spent_usd, reserved_usd, costs_recorded)
                SELECT target, p.period_start, p.period_end, 0, 0, 0 FROM budget_periods p WHERE p.budget_id = b.id;
            END IF;
            targets := targets || target;
            INSERT INTO budget_audit (actor, action, budget_id, before, after)
            VALUES ('migration', 'qualify_scope', target, jsonb_build_object('scope_id', b.scope_id),
                    jsonb_build_object('scope_id', org || '/' || b.scope_id));
        END LOOP;
        -- each budget's spend in each period is what its own charges add up to
        UPDATE budget_periods p
        SET spent_usd = coalesce(c.spent, 0), costs_recorded = coalesce(c.n, 0), updated_at = now()
        FROM budget_periods k
        LEFT JOIN (SELECT budget_id, period_start, sum(amount_usd) AS spent, count(*) AS n
                   FROM budget_charges GROUP BY 1, 2) c USING (budget_id, period_start)
        WHERE k.budget_id = ANY(targets) AND p.budget_id = k.budget_id AND p.period_start = k.period_start;
    END LOOP;
END $$;
