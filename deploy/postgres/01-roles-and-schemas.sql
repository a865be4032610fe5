-- One login role and one schema per service. Each role owns its schema and has no
-- rights anywhere else. Applied by the Postgres container at first start (compose),
-- and by `routewise dev` and the test harness against a fresh database.
-- Passwords here are for local development; production sets its own
-- (ALTER ROLE ... PASSWORD) and hands each service only its own DSN.
DO $$
DECLARE
    svc text;
BEGIN
    FOREACH svc IN ARRAY ARRAY['selector', 'cost_predictor', 'budget_enforcer', 'performance_tracker', 'metrics', 'gateway']
    LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'routewise_' || svc) THEN
            EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', 'routewise_' || svc, 'routewise_' || svc);
        END IF;
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', svc, 'routewise_' || svc);
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', svc);
    END LOOP;
END
$$;

-- Nobody but the owner creates objects in public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
