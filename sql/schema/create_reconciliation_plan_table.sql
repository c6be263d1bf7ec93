-- What the latest reconcile run intends to change on the platform: one row per action.
create table if not exists reconciliation_plan (
    action_key text not null primary key, -- Stable key of the action (same export, same key)
    run_id text not null, -- Reconcile run that planned it
    action text not null, -- create, block, unblock or update
    email text, -- Normalised email the action is about
    contact_id text, -- Platform contact (null for a create)
    name text, -- Name to create or update with
    reason text, -- Why the action is planned
    source_file text, -- Export file the deciding line is in
    line bigint, -- The deciding line
    planned_at timestamptz -- When the plan was made
);
