-- ztraded store, SQLite schema.
-- Money and quantities are TEXT holding `rust_decimal::Decimal`'s exact decimal text
-- (`Decimal::to_string`), so values and their scale round-trip exactly. JSON documents are
-- TEXT. Timestamps are Unix seconds (INTEGER). Durations are named by unit (`_ms`, `_us`).

-- Every reconcile of the daemon: what revision it looked at and what it did.
CREATE TABLE reconciles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    revision TEXT NOT NULL,
    previous_revision TEXT,
    result TEXT NOT NULL CHECK (result IN ('applied', 'refused', 'unchanged')),
    diff TEXT NOT NULL,
    findings TEXT NOT NULL,
    duration_ms INTEGER NOT NULL CHECK (duration_ms >= 0)
);
CREATE INDEX reconciles_at ON reconciles (at);

-- One execution of a pipeline for one symbol. `running` while it runs.
CREATE TABLE executions (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    revision TEXT NOT NULL,
    symbol TEXT NOT NULL,
    mode TEXT NOT NULL,
    trigger TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    status TEXT NOT NULL
        CHECK (status IN ('running', 'completed', 'skipped', 'failed', 'interrupted')),
    reason TEXT,
    cost_usd TEXT NOT NULL
);
CREATE INDEX executions_pipeline_started ON executions (pipeline, started_at);
CREATE INDEX executions_status ON executions (status);

-- The nodes of an execution, in the order they ran (`seq` from 0).
CREATE TABLE node_outputs (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL CHECK (seq >= 0),
    node TEXT NOT NULL,
    agent TEXT NOT NULL,
    output TEXT NOT NULL,
    reasoning TEXT NOT NULL,
    duration_us INTEGER NOT NULL CHECK (duration_us >= 0),
    cost_usd TEXT NOT NULL,
    PRIMARY KEY (execution_id, seq)
);

-- Orders as decided, written before submission (crash recovery matches them to broker
-- orders by client order id).
CREATE TABLE order_intents (
    client_order_id TEXT PRIMARY KEY,
    broker TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    symbol TEXT NOT NULL,
    execution_id TEXT,
    purpose TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity TEXT NOT NULL CHECK (CAST(quantity AS REAL) > 0),
    kind TEXT NOT NULL CHECK (kind IN ('entry', 'exit')),
    order_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'submitted', 'failed')),
    error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX order_intents_status ON order_intents (status);

-- Orders as the broker knows them (upserted on every change).
CREATE TABLE orders (
    client_order_id TEXT PRIMARY KEY,
    broker TEXT NOT NULL,
    broker_order_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity TEXT NOT NULL,
    filled_quantity TEXT NOT NULL,
    average_price TEXT NOT NULL,
    order_type TEXT NOT NULL,
    purpose TEXT NOT NULL,
    oco_group TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('accepted', 'partially_filled', 'filled', 'cancelled', 'rejected')),
    reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX orders_status ON orders (status);
CREATE INDEX orders_pipeline ON orders (pipeline, symbol);

-- Executions at the broker, once each.
CREATE TABLE fills (
    fill_id TEXT PRIMARY KEY,
    broker TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    broker_order_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity TEXT NOT NULL CHECK (CAST(quantity AS REAL) > 0),
    price TEXT NOT NULL,
    commission TEXT NOT NULL,
    purpose TEXT NOT NULL,
    ts INTEGER NOT NULL
);
CREATE INDEX fills_order ON fills (client_order_id);
CREATE INDEX fills_pipeline_ts ON fills (pipeline, ts);

-- Completed round trips.
CREATE TABLE trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('long', 'short')),
    entry_time INTEGER NOT NULL,
    exit_time INTEGER NOT NULL,
    entry_price TEXT NOT NULL,
    exit_price TEXT NOT NULL,
    quantity TEXT NOT NULL,
    stop_loss TEXT,
    target_1 TEXT,
    target_2 TEXT,
    exit_reason TEXT NOT NULL,
    pnl TEXT NOT NULL,
    fees TEXT NOT NULL,
    mode TEXT NOT NULL,
    CHECK (exit_time >= entry_time)
);
CREATE INDEX trades_pipeline_exit ON trades (pipeline, exit_time);
CREATE INDEX trades_exit ON trades (exit_time);

-- Open positions of the engine's book (one per pipeline and symbol; deleted when flat).
CREATE TABLE open_trades (
    pipeline TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('long', 'short')),
    quantity TEXT NOT NULL CHECK (CAST(quantity AS REAL) > 0),
    average_price TEXT NOT NULL,
    entry_time INTEGER NOT NULL,
    trade TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (pipeline, symbol)
);

-- What executions cost: LLM tokens and agent runtime.
CREATE TABLE cost_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    node TEXT NOT NULL,
    model TEXT,
    input_tokens INTEGER NOT NULL CHECK (input_tokens >= 0),
    output_tokens INTEGER NOT NULL CHECK (output_tokens >= 0),
    usd TEXT NOT NULL,
    runtime_us INTEGER NOT NULL CHECK (runtime_us >= 0),
    at INTEGER NOT NULL
);
CREATE INDEX cost_records_pipeline_at ON cost_records (pipeline, at);
CREATE INDEX cost_records_at ON cost_records (at);

-- Interventions: emergency closes, end-of-day flattening, budget stops, risk halts, removals.
CREATE TABLE interventions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL
        CHECK (kind IN ('manual', 'emergency', 'end_of_day', 'budget', 'risk_halt', 'pipeline_removed')),
    scope TEXT NOT NULL,
    reason TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX interventions_at ON interventions (at);

-- Latched halts: `all`, `pipeline:<name>`, `symbol:<SYMBOL>`.
CREATE TABLE halts (
    scope TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since INTEGER NOT NULL
);

-- Broker snapshots (the simulated broker's state after every change).
CREATE TABLE broker_states (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Account equity over time, one point per broker, account and second.
CREATE TABLE equity_points (
    broker TEXT NOT NULL,
    account TEXT NOT NULL,
    ts INTEGER NOT NULL,
    equity TEXT NOT NULL,
    cash TEXT NOT NULL,
    PRIMARY KEY (broker, account, ts)
);
