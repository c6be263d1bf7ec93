-- The plan: what must change on the platform for it to agree with the CRM export(s).
-- A CRM email listed more than once counts as its most restrictive line (a flagged line
-- beats a mailable one); platform contacts are matched on the normalised email.
insert into reconciliation_plan (
    action_key, run_id, action, email, contact_id, name, reason, source_file, line, planned_at
)
with crm_lines as (
    select
        email,
        name,
        do_not_email,
        unsubscribed,
        hard_bounced,
        mailable,
        source_file,
        line,
        max(name) over (partition by email) as any_name,
        row_number() over (
            partition by email
            order by case when mailable then 1 else 0 end, source_file, line
        ) as restrictive_rank
    from crm_contacts
    where email is not null
),

crm as (
    select
        email,
        coalesce(name, any_name) as name,
        mailable,
        source_file,
        line,
        trim(
            case when do_not_email then 'do-not-email ' else '' end
            || case when unsubscribed then 'unsubscribed ' else '' end
            || case when hard_bounced then 'hard-bounced' else '' end
        ) as flags
    from crm_lines
    where restrictive_rank = 1
),

platform_ranked as (
    select
        id,
        email_key,
        name,
        status,
        blocked_reason,
        updated_at,
        row_number() over (
            partition by email_key
            order by case when status = 'Active' then 0 else 1 end, id
        ) as email_rank
    from contacts
    where deleted_at is null and email_key is not null
),

platform as (
    select id, email_key, name, status, blocked_reason, updated_at
    from platform_ranked
    where email_rank = 1
),

last_own_state_change as (
    select
        contact_id,
        action,
        contact_updated_at,
        contact_blocked_reason,
        row_number() over (partition by contact_id order by done_at desc) as recency
    from pushback_results
    where state = 'done' and action in ('block', 'unblock') and contact_id is not null
),

-- The block in place is still the connector's only if the contact has not changed since
-- (updated_at no later than our block's answer) and carries the reason our block gave it:
-- a block the platform put in place afterwards (bounce, complaint) is never undone.
blocked_by_connector as (
    select own.contact_id
    from last_own_state_change as own
    join platform on platform.id = own.contact_id
    where own.recency = 1
      and own.action = 'block'
      and own.contact_updated_at is not null
      and platform.updated_at <= own.contact_updated_at
      and platform.blocked_reason is not distinct from own.contact_blocked_reason
),

-- When in doubt, do not email: an email with a line whose do-not-email, unsubscribed or
-- bounced cell could not be read gets no create and no unblock, whatever its other lines say.
doubtful as (
    select distinct email
    from crm_rejected_rows
    where kind = 'unreadable flag' and email is not null
),

matched as (
    select
        crm.*,
        platform.id as contact_id,
        platform.name as platform_name,
        platform.status as platform_status,
        case when blocked_by_connector.contact_id is null then 0 else 1 end as blocked_by_us,
        case when doubtful.email is null then 0 else 1 end as in_doubt
    from crm
    left join platform on platform.email_key = crm.email
    left join blocked_by_connector on blocked_by_connector.contact_id = platform.id
    left join doubtful on doubtful.email = crm.email
),

actions as (
    select
        'create' as action, email, contact_id, name, source_file, line,
        'mailable in the CRM, no platform contact has this email' as reason
    from matched
    where mailable and contact_id is null and in_doubt = 0

    union all

    select
        'block', email, contact_id, name, source_file, line,
        'CRM flags ' || flags || ', platform contact is Active'
    from matched
    where not mailable and platform_status = 'Active'

    union all

    select
        'unblock', email, contact_id, name, source_file, line,
        'mailable in the CRM again, and this connector blocked the contact earlier'
    from matched
    where mailable and platform_status = 'Blocked' and blocked_by_us = 1 and in_doubt = 0

    union all

    select
        'update', email, contact_id, name, source_file, line,
        'name differs: platform has ' || coalesce(platform_name, '(none)')
    from matched
    where cast(:include_updates as boolean)
      and contact_id is not null
      and name is not null
      and name <> coalesce(platform_name, '')
),

final as (
    select
        md5(cast(:export_key as text) || '|' || action || '|' || coalesce(contact_id, email)) as action_key,
        cast(:run_id as text) as run_id,
        action,
        email,
        contact_id,
        name,
        reason,
        source_file,
        line,
        cast(:planned_at as timestamptz) as planned_at
    from actions
)

select * from final
