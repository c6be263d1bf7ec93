-- contact_health: one row per contact, deleted ones included (deleted_at says so).
--
-- The 30-day window is the 30 days before :as_of, the time the table is built (a bound
-- parameter, so a rebuild of the same data at the same time gives the same table). Windows and
-- "last" times count messages by created_at; the last bounce or complaint uses the message's
-- updated_at (when its status last changed), falling back to created_at.
-- Extension point: whether the CRM still knows the contact joins here once the reconciliation
-- tables exist (a left join on contact_id in final).

with

contacts as (
    select
        id,
        email,
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
        build.as_of
    from contacts
    cross join build
    left join message_summary as summary
        on summary.contact_id = contacts.id
)

select * from final
