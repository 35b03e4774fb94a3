-- Orders whose time in force ran out are 'expired' (Alpaca's and IB's word).
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('accepted', 'partially_filled', 'filled', 'cancelled', 'rejected', 'expired'));
