-- The plan: what must change on the platform for it to agree with the CRM export(s).
-- A CRM email listed more than once counts as its most restrictive line (a flagged line
-- beats a mailable one, then the first by file and line); platform contacts are matched on
-- the normalised email (an Active one first, then the lowest id).
--
-- Shaped for a million lines against a million contacts in little memory (DuckDB's default
-- cap is 256 MB): most emails are on one CRM line and one platform contact, and need no
-- ranking; a count per email (a hash aggregate) finds the few repeated ones, and only those
-- are ranked. Each big relation is read once, as a stream: only the rows that become an
-- action are kept, so nothing the size of the export is held (a CTE read twice is).
insert into reconciliation_plan (
    action_key, run_id, action, email, contact_id, name, reason, source_file, line, planned_at
)
with repeated_crm_emails as (
    select email
    from crm_contacts
    where email is not null
    group by email
    having count(*) > 1
),

repeated_crm_lines as (
    select
        crm_contacts.email,
        crm_contacts.name,
        crm_contacts.do_not_email,
        crm_contacts.unsubscribed,
        crm_contacts.hard_bounced,
        crm_contacts.mailable,
        crm_contacts.source_file,
        crm_contacts.line,
        max(crm_contacts.name) over (partition by crm_contacts.email) as any_name,
        row_number() over (
            partition by crm_contacts.email
            order by
                case when crm_contacts.mailable then 1 else 0 end,
                crm_contacts.source_file,
                crm_contacts.line
        ) as restrictive_rank
    from crm_contacts
    join repeated_crm_emails on repeated_crm_emails.email = crm_contacts.email
),

deciding_lines as (
    select
        email, name, do_not_email, unsubscribed, hard_bounced, mailable, source_file, line
    from crm_contacts
    where email is not null
      and not exists (
          select 1 from repeated_crm_emails where repeated_crm_emails.email = crm_contacts.email
      )

    union all

    select
        email, coalesce(name, any_name), do_not_email, unsubscribed, hard_bounced, mailable,
        source_file, line
    from repeated_crm_lines
    where restrictive_rank = 1
),

repeated_platform_emails as (
    select email_key
    from contacts
    where deleted_at is null and email_key is not null
    group by email_key
    having count(*) > 1
),

repeated_platform_contacts as (
    select
        contacts.id,
        contacts.email_key,
        contacts.name,
        contacts.status,
        contacts.blocked_reason,
        contacts.updated_at,
        row_number() over (
            partition by contacts.email_key
            order by case when contacts.status = 'Active' then 0 else 1 end, contacts.id
        ) as email_rank
    from contacts
    join repeated_platform_emails
        on repeated_platform_emails.email_key = contacts.email_key
    where contacts.deleted_at is null
),

platform as (
    select id, email_key, name, status, blocked_reason, updated_at
    from contacts
    where deleted_at is null
      and email_key is not null
      and not exists (
          select 1
          from repeated_platform_emails
          where repeated_platform_emails.email_key = contacts.email_key
      )

    union all

    select id, email_key, name, status, blocked_reason, updated_at
    from repeated_platform_contacts
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

own_blocks as (
    select contact_id, contact_updated_at, contact_blocked_reason
    from last_own_state_change
    where recency = 1 and action = 'block' and contact_updated_at is not null
),

-- When in doubt, do not email: an email with a line whose do-not-email, unsubscribed or
-- bounced cell could not be read gets no create and no unblock, whatever its other lines say.
doubtful as (
    select distinct email
    from crm_rejected_rows
    where kind = 'unreadable flag' and email is not null
),

matched as not materialized (
    select
        crm.email,
        crm.name,
        crm.mailable,
        crm.source_file,
        crm.line,
        trim(
            case when crm.do_not_email then 'do-not-email ' else '' end
            || case when crm.unsubscribed then 'unsubscribed ' else '' end
            || case when crm.hard_bounced then 'hard-bounced' else '' end
        ) as flags,
        platform.id as contact_id,
        platform.name as platform_name,
        platform.status as platform_status,
        -- The block in place is still the connector's only if the contact has not changed
        -- since (updated_at no later than our block's answer) and carries the reason our
        -- block gave it: a block the platform put in place afterwards (bounce, complaint) is
        -- never undone.
        case
            when own_blocks.contact_id is not null
                and platform.updated_at <= own_blocks.contact_updated_at
                and platform.blocked_reason is not distinct from own_blocks.contact_blocked_reason
                then 1
            else 0
        end as blocked_by_us,
        case when doubtful.email is null then 0 else 1 end as in_doubt
    from deciding_lines as crm
    left join platform on platform.email_key = crm.email
    left join own_blocks on own_blocks.contact_id = platform.id
    left join doubtful on doubtful.email = crm.email
),

-- The lines that become an action (a few in a million); the actions are read from these.
candidates as materialized (
    select *
    from matched
    where (mailable and contact_id is null and in_doubt = 0)
       or (not mailable and platform_status = 'Active')
       or (mailable and platform_status = 'Blocked' and blocked_by_us = 1 and in_doubt = 0)
       or (
           cast(:include_updates as boolean)
           and contact_id is not null
           and name is not null
           and name <> coalesce(platform_name, '')
       )
),

actions as (
    select
        'create' as action, email, contact_id, name, source_file, line,
        'mailable in the CRM, no platform contact has this email' as reason
    from candidates
    where mailable and contact_id is null and in_doubt = 0

    union all

    select
        'block', email, contact_id, name, source_file, line,
        'CRM flags ' || flags || ', platform contact is Active'
    from candidates
    where not mailable and platform_status = 'Active'

    union all

    select
        'unblock', email, contact_id, name, source_file, line,
        'mailable in the CRM again, and this connector blocked the contact earlier'
    from candidates
    where mailable and platform_status = 'Blocked' and blocked_by_us = 1 and in_doubt = 0

    union all

    select
        'update', email, contact_id, name, source_file, line,
        'name differs: platform has ' || coalesce(platform_name, '(none)')
    from candidates
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
