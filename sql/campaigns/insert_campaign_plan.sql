-- A campaign's plan: every audience row, included in a batch or excluded with one reason
-- (the first rule that applies, in the order below). When in doubt the row is excluded.
insert into campaign_plan (
    campaign, audience_row, content_key, contact_id, email, name, included, reason,
    batch_number, batch_key, planned_at
)
with audience as (
    select
        row_number() over () as audience_row,
        nullif(trim(cast(contact_id as text)), '') as given_contact_id,
        nullif(lower(trim(cast(email as text))), '') as given_email,
        nullif(trim(cast(name as text)), '') as name
    from campaign_audience_rows
),

-- One platform contact per email the audience gives without an id: an active one first,
-- deleted ones last. Only those emails are ranked (most audiences give ids).
wanted_emails as (
    select distinct given_email from audience where given_contact_id is null
),

platform_by_email as (
    select id, email_key
    from (
        select
            c.id,
            c.email_key,
            row_number() over (
                partition by c.email_key
                order by
                    case when c.deleted_at is null then 0 else 1 end,
                    case when c.status = 'Active' then 0 else 1 end,
                    c.id
            ) as email_rank
        from contacts as c
        join wanted_emails as w on w.given_email = c.email_key
    ) as ranked
    where email_rank = 1
),

identified as (
    select
        a.audience_row,
        a.given_contact_id,
        a.given_email,
        a.name,
        coalesce(a.given_contact_id, by_email.id) as contact_id
    from audience as a
    left join platform_by_email as by_email
        on a.given_contact_id is null and by_email.email_key = a.given_email
),

-- The first audience row of each recipient; later ones are duplicates.
first_rows as (
    select coalesce(contact_id, given_email) as recipient_key, min(audience_row) as first_row
    from identified
    group by coalesce(contact_id, given_email)
),

matched as (
    select
        i.*,
        c.id as known_id,
        c.status,
        c.deleted_at,
        coalesce(c.email_key, i.given_email) as email,
        coalesce(i.contact_id, i.given_email) as recipient_key,
        case when f.first_row = i.audience_row then 1 else 2 end as occurrence
    from identified as i
    left join contacts as c on c.id = i.contact_id
    left join first_rows as f on f.recipient_key = coalesce(i.contact_id, i.given_email)
),

crm as (
    select
        email,
        max(case when do_not_email then 1 else 0 end) as do_not_email,
        max(case when unsubscribed then 1 else 0 end) as unsubscribed,
        max(case when hard_bounced then 1 else 0 end) as hard_bounced
    from crm_contacts
    where email is not null
    group by email
),

reached as (
    select distinct r.recipient_key
    from campaign_batch_recipients as r
    join campaign_results as b on b.batch_key = r.batch_key
    where b.campaign = :campaign and b.state <> 'rejected'
),

opted_out as (
    select distinct contact_id
    from contact_opt_outs
    where category_id = :category_id
),

recent_by_contact as (
    select distinct contact_id
    from messages
    where category_id = :category_id
      and cast(:frequency_cap_days as bigint) > 0
      and created_at >= cast(:now as timestamptz)
        - cast(:frequency_cap_days as bigint) * interval '1 day'
      and contact_id is not null
),

recent_by_email as (
    select distinct lower(contact_email) as email
    from messages
    where category_id = :category_id
      and cast(:frequency_cap_days as bigint) > 0
      and created_at >= cast(:now as timestamptz)
        - cast(:frequency_cap_days as bigint) * interval '1 day'
      and contact_email is not null
),

judged as (
    select
        m.audience_row,
        coalesce(m.known_id, m.given_contact_id) as contact_id,
        m.email,
        m.name,
        m.recipient_key,
        case
            when m.given_contact_id is null and m.given_email is null then 'missing_recipient'
            when m.given_contact_id is not null and m.known_id is null then 'unknown_contact_id'
            when m.email is null
                or m.email not like '_%@_%._%'
                or m.email like '%@%@%'
                or m.email like '% %'
                then 'invalid_email'
            when m.occurrence > 1 then 'duplicate'
            when m.deleted_at is not null then 'deleted_contact'
            when m.known_id is not null and m.status <> 'Active' then 'blocked_contact'
            when opted_out.contact_id is not null then 'opted_out'
            when crm.do_not_email = 1 then 'crm_do_not_email'
            when crm.unsubscribed = 1 then 'crm_unsubscribed'
            when crm.hard_bounced = 1 then 'crm_hard_bounced'
            when m.known_id is null and not cast(:allow_unknown_emails as boolean)
                then 'unknown_email'
            when reached.recipient_key is not null then 'already_reached'
            when recent_by_contact.contact_id is not null
                or recent_by_email.email is not null then 'frequency_cap'
        end as reason
    from matched as m
    left join crm on crm.email = m.email
    left join opted_out on opted_out.contact_id = m.known_id
    left join reached on reached.recipient_key = m.recipient_key
    left join recent_by_contact on recent_by_contact.contact_id = m.known_id
    left join recent_by_email on recent_by_email.email = m.email
),

numbered as (
    select
        audience_row,
        recipient_key,
        cast(floor(
            (row_number() over (order by recipient_key) - 1)
            / cast(:max_per_batch as double precision)
        ) as bigint) as batch_number
    from judged
    where reason is null
),

batches as (
    select
        batch_number,
        md5(
            cast(:campaign as text) || '|' || cast(:content_key as text) || '|'
            || string_agg(recipient_key, ',' order by recipient_key)
        ) as batch_key
    from numbered
    group by batch_number
),

final as (
    select
        cast(:campaign as text) as campaign,
        j.audience_row,
        cast(:content_key as text) as content_key,
        j.contact_id,
        j.email,
        j.name,
        j.reason is null as included,
        j.reason,
        n.batch_number,
        b.batch_key,
        cast(:now as timestamptz) as planned_at
    from judged as j
    left join numbered as n on n.audience_row = j.audience_row
    left join batches as b on b.batch_number = n.batch_number
)

select * from final
