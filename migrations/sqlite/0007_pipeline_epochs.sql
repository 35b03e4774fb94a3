-- Fencing epochs of the pipeline leases (several daemons on one account, `[bus] url =
-- "redis://…"`): the epoch of each pipeline's current lease holder, written by the daemon when
-- it takes the lease (only ever raised). An order intent is written only in a transaction
-- that finds the writer's epoch here (the row is locked by the check until the intent is
-- committed), so a daemon whose lease passed to another cannot submit. `holder` names the
-- daemon (host and process id); `since` is when it claimed, Unix seconds.
CREATE TABLE pipeline_epochs (
    pipeline TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL CHECK (epoch > 0),
    holder TEXT NOT NULL,
    since INTEGER NOT NULL
);
-- The lease epoch an intent was written under; NULL with one daemon (no leases).
ALTER TABLE order_intents ADD COLUMN epoch INTEGER;
