-- Orders whose time in force ran out are 'expired' (Alpaca's and IB's word): SQLite cannot
-- alter a CHECK constraint, so the table is rebuilt with the same columns and indexes.
CREATE TABLE orders_new (
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
        CHECK (status IN ('accepted', 'partially_filled', 'filled', 'cancelled', 'rejected', 'expired')),
    reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
INSERT INTO orders_new SELECT client_order_id, broker, broker_order_id, pipeline, symbol, side,
    quantity, filled_quantity, average_price, order_type, purpose, oco_group, status, reason,
    created_at, updated_at FROM orders;
DROP TABLE orders;
ALTER TABLE orders_new RENAME TO orders;
CREATE INDEX orders_status ON orders (status);
CREATE INDEX orders_pipeline ON orders (pipeline, symbol);
