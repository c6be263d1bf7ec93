-- Marketplace batches (one email to one category and many contacts), merged on id.
create table if not exists batches (
    id text not null primary key, -- Batch id (MST-####-####-####); unique (on DuckDB kept so by the loads, without an index)
    subject text, -- Email subject
    category_id text, -- Category the batch was sent to (categories.id)
    category_name text, -- Category name at send time
    account_id text, -- Sending account
    account_name text, -- Sending account name
    attachment_count bigint, -- Number of attachments
    created_at timestamptz, -- audit.created.at
    updated_at timestamptz, -- audit.updated.at
    synced_at timestamptz, -- When this row was last written
    row_hash text, -- Hash of the source record
    raw json -- The whole source record (body included)
);
