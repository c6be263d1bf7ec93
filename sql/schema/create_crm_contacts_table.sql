-- The CRM's contacts from the export(s) of the latest reconcile run: one row per good line,
-- replaced on every run. The plan folds lines with the same email, most restrictive first.
-- (source_file, line) identifies a line; it is not declared a primary key, as building its
-- index costs a million-line load more than reading and normalising the export.
create table if not exists crm_contacts (
    run_id text not null, -- Reconcile run that read the line
    source_file text not null, -- Export file name
    line bigint not null, -- Line of the file where the record starts (header is line 1)
    email text, -- Normalised email (trimmed, case-folded, IDNA domain)
    email_original text, -- The email as written in the export
    name text, -- Name from the export (or first + last)
    do_not_email boolean, -- Do-not-email flag set
    unsubscribed boolean, -- Unsubscribed flag set
    hard_bounced boolean, -- Hard-bounce flag set
    opted_out_category_ids json, -- Marketplace categories the CRM says were opted out of
    mailable boolean, -- No flag set: the CRM says this address may be emailed
    read_at timestamptz -- When the export was read
);
