-- Where each sync stands (cursors, last full refresh), kept in the warehouse so any Dagster
-- instance or machine continues where the last one stopped.
create table if not exists sync_state (
    name text not null primary key, -- What the value is for, e.g. contacts.cursor
    value text, -- The value (timestamps in ISO 8601)
    updated_at timestamptz -- When it was written
);
