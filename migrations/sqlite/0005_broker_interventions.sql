-- Interventions of the broker reconciliation: a stop re-placed for a position found without
-- one ('stop_replaced'), positions or orders at the broker that no pipeline owns
-- ('broker_drift'). SQLite cannot alter a CHECK constraint: the table is rebuilt.
CREATE TABLE interventions_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL
        CHECK (kind IN ('manual', 'emergency', 'end_of_day', 'budget', 'risk_halt', 'pipeline_removed', 'stop_replaced', 'broker_drift')),
    scope TEXT NOT NULL,
    reason TEXT NOT NULL,
    result TEXT NOT NULL
);
INSERT INTO interventions_new SELECT id, at, kind, scope, reason, result FROM interventions;
DROP TABLE interventions;
ALTER TABLE interventions_new RENAME TO interventions;
CREATE INDEX interventions_at ON interventions (at);
