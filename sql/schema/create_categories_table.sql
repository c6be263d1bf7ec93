-- Marketplace notification categories, replaced on every run.
create table if not exists categories (
    id text not null primary key, -- Category id (NTC-####-####)
    name text, -- Category name
    short_description text, -- Short description
    description text, -- Long description
    status text, -- Published, Unpublished, New or Deleted
    opt_out_allowed boolean, -- Whether contacts may opt out of this category
    created_at timestamptz, -- audit.created.at
    updated_at timestamptz, -- audit.updated.at
    synced_at timestamptz, -- When this row was written
    row_hash text, -- Hash of the source record
    raw json -- The whole source record, statistics included
);
