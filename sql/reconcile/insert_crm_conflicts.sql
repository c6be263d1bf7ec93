-- Emails listed more than once with different flags, and how the plan resolves them.
-- One pass of cheap aggregates finds the emails whose lines disagree (few); only their lines
-- are then gathered into text (a string per email over a million emails costs seconds).
insert into crm_conflicts (run_id, email, lines, resolution)
with disagreeing as (
    select email
    from crm_contacts
    where email is not null
    group by email
    having min(
        case when do_not_email then 4 else 0 end
        + case when unsubscribed then 2 else 0 end
        + case when hard_bounced then 1 else 0 end
    ) <> max(
        case when do_not_email then 4 else 0 end
        + case when unsubscribed then 2 else 0 end
        + case when hard_bounced then 1 else 0 end
    )
),

final as (
    select
        cast(:run_id as text) as run_id,
        crm_contacts.email,
        string_agg(
            crm_contacts.source_file || ':' || cast(crm_contacts.line as text),
            ', '
            order by crm_contacts.source_file, crm_contacts.line
        ) as lines,
        case
            when min(case when crm_contacts.mailable then 1 else 0 end) = 0
                then 'most restrictive wins: not mailable'
            else 'mailable'
        end as resolution
    from crm_contacts
    join disagreeing on disagreeing.email = crm_contacts.email
    group by crm_contacts.email
)

select * from final
