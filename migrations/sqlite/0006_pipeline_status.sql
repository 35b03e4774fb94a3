-- Each pipeline's state as the daemon last set it (`ztraded status` reads it): written when
-- the state, its reason or the pipeline's revision changes, never per bar. The daemon clears
-- the table when it starts (its pipelines write their rows as they start) and deletes the
-- row of a removed pipeline once it has drained. `symbols` is a JSON array; `budget` is JSON
-- `{daily_usd, monthly_usd, timezone}` (decimal text) or NULL without a budget; `since` is
-- when the state was entered, Unix seconds of the daemon's clock (simulated in replay).
CREATE TABLE pipeline_status (
    pipeline TEXT PRIMARY KEY,
    state TEXT NOT NULL
        CHECK (state IN ('running', 'halted', 'draining', 'stopped', 'failed')),
    reason TEXT,
    revision TEXT NOT NULL,
    mode TEXT NOT NULL,
    broker TEXT,
    symbols TEXT NOT NULL,
    budget TEXT,
    since INTEGER NOT NULL
);
