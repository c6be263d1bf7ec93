-- Active platform contacts the CRM export does not list: reported, never deleted.
create table if not exists platform_contacts_missing_from_crm (
    run_id text not null, -- Reconcile run
    contact_id text not null primary key, -- Platform contact
    email text, -- Its email
    status text -- Its status
);
