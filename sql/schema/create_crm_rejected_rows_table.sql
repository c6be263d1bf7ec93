-- Export lines that could not become CRM contacts, with the reason; replaced on every run.
create table if not exists crm_rejected_rows (
    run_id text not null, -- Reconcile run that read the line
    source_file text not null, -- Export file name
    line bigint not null, -- Line of the file where the record starts
    kind text, -- missing email, invalid email, missing field or unreadable line
    reason text, -- What is wrong, in words
    raw text, -- The line as read (cut to 1,000 characters)
    read_at timestamptz, -- When the export was read
    primary key (source_file, line)
);
