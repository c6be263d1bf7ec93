-- Export lines that could not become CRM contacts, with the reason; replaced on every run.
create table if not exists crm_rejected_rows (
    run_id text not null, -- Reconcile run that read the line
    source_file text not null, -- Export file name
    line bigint not null, -- Line of the file where the record starts
    kind text, -- missing email, invalid email, missing field, unreadable line or unreadable flag
    reason text, -- What is wrong, in words
    raw text, -- The line as read (cut to 1,000 characters)
    read_at timestamptz, -- When the export was read
    email text, -- The normalised email when the line had a valid one, else null; an email with an unreadable flag line is never created or unblocked
    primary key (source_file, line)
);
