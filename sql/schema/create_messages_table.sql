-- Marketplace messages (one per contact per batch), in daily partitions on created_at:
-- re-materialising a day replaces exactly that day.
create table if not exists messages (
    id text not null primary key, -- Message id (MSG-####-####-####-####); unique (on DuckDB kept so by the loads, without an index)
    batch_id text, -- Batch (batches.id)
    contact_id text, -- Recipient contact (contacts.id)
    contact_email text, -- Recipient email at send time
    category_id text, -- Category (categories.id)
    account_id text, -- Sending account
    status text, -- Queued, Sent, Failed, Bounced, Complained or Discarded
    subject text, -- Email subject
    created_at timestamptz, -- audit.created.at; the partition key
    updated_at timestamptz, -- audit.updated.at
    synced_at timestamptz, -- When this row was written
    raw json -- The source record without the body
);
