-- Marketplace contacts, merged incrementally on audit.updated.at; a full refresh marks
-- contacts the API no longer returns with deleted_at instead of dropping them.
create table if not exists contacts (
    id text not null primary key, -- Contact id (CTT-####-####-#### or CTT-####-####); unique (on DuckDB kept so by the loads, without an index)
    email text, -- Email address as the platform holds it
    email_key text, -- The email normalised as CRM exports are (trimmed, case-folded, IDNA), for matching
    name text, -- Display name
    status text, -- Active or Blocked
    blocked_reason text, -- Why the contact is blocked (bounce, complaint, administrator ...)
    user_id text, -- Linked platform user, if any
    user_name text, -- Name of the linked platform user
    opt_out_count bigint, -- Number of categories the contact opted out of
    created_at timestamptz, -- When the contact was created (audit.created.at)
    updated_at timestamptz, -- When the contact last changed (audit.updated.at)
    deleted_at timestamptz, -- When a full refresh first found the contact gone from the API; null while it exists
    synced_at timestamptz, -- When this row was last written by the connector
    row_hash text, -- Hash of the source record, to tell real changes from re-reads
    raw json -- The whole source record, so fields without a column are kept
);
