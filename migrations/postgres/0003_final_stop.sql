-- The stop a trade ended with (after a move to breakeven, say); `stop_loss` is the stop at
-- entry.
ALTER TABLE trades ADD COLUMN final_stop TEXT;
