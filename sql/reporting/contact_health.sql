-- contact_health: one row per contact, deleted ones included (deleted_at says so).
--
-- The 30-day window is the 30 days before :as_of, the time the table is built (a bound
-- parameter, so a rebuild of the same data at the same time gives the same table). Windows and
-- "last" times count messages by created_at; the last bounce or complaint uses the message's
-- updated_at (when its status last changed), falling back to created_at.
-- Whether the CRM still knows the contact: crm_contacts holds the lines of the export(s) the
-- latest reconcile run read, matched on the normalised email (contacts.email_key) as the plan
-- matches them. An email on several lines gets the most restrictive verdict, as in the plan:
-- mailable only if every line is. With no CRM line at all (no export read yet), in_crm is
-- null rather than false: "unknown", not "gone from the CRM".

with

contacts as (
    select
        id,
        email,
        email_key,
        name,
        status,
        blocked_reason,
        opt_out_count,
        created_at,
        deleted_at
    from contacts
),

messages as (
    select
        contact_id,
        status,
        created_at,
        updated_at
    from messages
    where contact_id is not null
),

crm_contacts as (
    select
        email,
        mailable,
        read_at
    from crm_contacts
),

crm_export as (
    select
        count(*) > 0 as was_read,
        max(read_at) as read_at
    from crm_contacts
),

crm_verdict as (
    select
        email,
        min(case when mailable then 1 else 0 end) = 1 as mailable
    from crm_contacts
    where email is not null
    group by email
),

build as (
    select
        cast(:as_of as timestamptz) as as_of,
        (cast(:as_of as timestamptz) at time zone 'UTC') - interval '30' day as window_start_utc
),

message_summary as (
    select
        contact_id,
        sum(case when recent then 1 else 0 end) as total_30d,
        sum(case when recent and status = 'Sent' then 1 else 0 end) as sent_30d,
        sum(case when recent and status = 'Bounced' then 1 else 0 end) as bounced_30d,
        sum(case when recent and status = 'Complained' then 1 else 0 end) as complained_30d,
        sum(case when recent and status = 'Discarded' then 1 else 0 end) as discarded_30d,
        sum(case when recent and status = 'Failed' then 1 else 0 end) as failed_30d,
        sum(case when recent and status = 'Queued' then 1 else 0 end) as queued_30d,
        max(created_at) as last_message_at,
        max(case when status = 'Bounced' then coalesce(updated_at, created_at) end)
            as last_bounce_at,
        max(case when status = 'Complained' then coalesce(updated_at, created_at) end)
            as last_complaint_at,
        max(
            case
                when status in ('Bounced', 'Complained') then coalesce(updated_at, created_at)
            end
        ) as last_bounce_or_complaint_at
    from (
        select
            messages.contact_id,
            messages.status,
            messages.created_at,
            messages.updated_at,
            (messages.created_at at time zone 'UTC') >= build.window_start_utc as recent
        from messages
        cross join build
    ) as dated_messages
    group by contact_id
),

final as (
    select
        contacts.id as contact_id,
        contacts.email,
        contacts.name,
        contacts.status,
        contacts.blocked_reason,
        contacts.opt_out_count,
        contacts.created_at,
        contacts.deleted_at,
        case
            when contacts.deleted_at is not null then 'deleted'
            when contacts.status = 'Blocked' then 'blocked'
            when coalesce(summary.bounced_30d, 0) + coalesce(summary.complained_30d, 0) > 0
                then 'at_risk'
            else 'healthy'
        end as health,
        coalesce(summary.total_30d, 0) as messages_30d_total,
        coalesce(summary.sent_30d, 0) as messages_30d_sent,
        coalesce(summary.bounced_30d, 0) as messages_30d_bounced,
        coalesce(summary.complained_30d, 0) as messages_30d_complained,
        coalesce(summary.discarded_30d, 0) as messages_30d_discarded,
        coalesce(summary.failed_30d, 0) as messages_30d_failed,
        coalesce(summary.queued_30d, 0) as messages_30d_queued,
        summary.last_message_at,
        summary.last_bounce_at,
        summary.last_complaint_at,
        summary.last_bounce_or_complaint_at,
        build.as_of,
        case when crm_export.was_read then crm_verdict.email is not null end as in_crm,
        crm_verdict.mailable as crm_mailable,
        crm_export.read_at as crm_read_at
    from contacts
    cross join build
    cross join crm_export
    left join message_summary as summary
        on summary.contact_id = contacts.id
    left join crm_verdict
        on crm_verdict.email = contacts.email_key
)

select * from final
