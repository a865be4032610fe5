-- The decision's trace context (W3C traceparent/tracestate), so the cost the application records
-- later for the task can continue the same trace.
ALTER TABLE decisions ADD COLUMN trace_context jsonb NOT NULL DEFAULT '{}';
