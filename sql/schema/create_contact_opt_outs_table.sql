-- One row per contact and category the contact opted out of, kept in step with contacts.
create table if not exists contact_opt_outs (
    contact_id text not null, -- Contact id (contacts.id)
    category_id text not null, -- Category opted out of (categories.id)
    category_name text, -- Category name at sync time
    synced_at timestamptz, -- When this row was written
    primary key (contact_id, category_id) -- one row per pair (on DuckDB kept so by the loads, without an index)
);
