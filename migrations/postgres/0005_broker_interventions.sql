-- Interventions of the broker reconciliation: a stop re-placed for a position found without
-- one ('stop_replaced'), positions or orders at the broker that no pipeline owns
-- ('broker_drift').
ALTER TABLE interventions DROP CONSTRAINT interventions_kind_check;
ALTER TABLE interventions ADD CONSTRAINT interventions_kind_check
    CHECK (kind IN ('manual', 'emergency', 'end_of_day', 'budget', 'risk_halt', 'pipeline_removed', 'stop_replaced', 'broker_drift'));
