-- Emails the export(s) list more than once with different flags; the most restrictive wins.
create table if not exists crm_conflicts (
    run_id text not null, -- Reconcile run
    email text not null primary key, -- The normalised email
    lines text, -- Where it appears (file:line, ...)
    resolution text -- What the plan uses
);
