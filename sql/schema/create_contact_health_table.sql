-- One row per contact (deleted ones included, with deleted_at): status, block reason, opt-outs,
-- messages of the last 30 days by status and the last bounce or complaint, summed up as a
-- health label; and whether the CRM export of the latest reconcile run still lists it.
-- Rebuilt as a whole after each sync and each reconcile run.
create table if not exists contact_health (
    contact_id text not null primary key, -- Contact id (contacts.id)
    email text, -- Email address as the platform holds it
    name text, -- Display name
    status text, -- Active or Blocked
    blocked_reason text, -- Why the contact is blocked (bounce, complaint, administrator ...)
    opt_out_count bigint, -- Number of categories the contact opted out of
    created_at timestamptz, -- When the contact was created
    deleted_at timestamptz, -- When a full refresh found the contact gone from the API; null while it exists
    health text, -- deleted, blocked, at_risk (a bounce or complaint in the last 30 days) or healthy
    messages_30d_total bigint, -- Messages to the contact created in the 30 days before as_of, any status
    messages_30d_sent bigint, -- Of those, Sent
    messages_30d_bounced bigint, -- Of those, Bounced
    messages_30d_complained bigint, -- Of those, Complained
    messages_30d_discarded bigint, -- Of those, Discarded
    messages_30d_failed bigint, -- Of those, Failed
    messages_30d_queued bigint, -- Of those, still Queued
    last_message_at timestamptz, -- When the most recent message to the contact was created
    last_bounce_at timestamptz, -- When the most recent bounced message last changed (its updated_at, else created_at)
    last_complaint_at timestamptz, -- When the most recent complained message last changed
    last_bounce_or_complaint_at timestamptz, -- The later of last_bounce_at and last_complaint_at
    as_of timestamptz, -- When the table was built: the 30-day window ends here
    in_crm boolean, -- Whether the CRM export(s) of the latest reconcile run list the contact's email (normalised, as the plan matches it); null when no CRM export was ever read (crm_contacts is empty: also when the latest export had no valid line)
    crm_mailable boolean, -- The CRM's verdict for the email after most-restrictive-wins: true only if no line flags it do-not-email, unsubscribed or hard-bounced; null when not in the CRM
    crm_read_at timestamptz -- When the CRM export that in_crm and crm_mailable come from was read; null when none was
);
