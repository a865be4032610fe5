-- An adjustment that comes before its cost (or before the adjustment preceding it) is kept here,
-- applied (its id claimed), and takes effect when what it follows arrives: adjustments of one cost
-- apply in their order, whatever order the bus delivers them in.
CREATE TABLE parked_adjustments (
    event_id uuid PRIMARY KEY,
    cost_event_id uuid NOT NULL,
    sequence int NOT NULL,
    payload jsonb NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parked_adjustments_cost ON parked_adjustments (cost_event_id, sequence);
CREATE INDEX parked_adjustments_parked_at ON parked_adjustments USING brin (parked_at);
