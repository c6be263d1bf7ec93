-- Emails listed more than once with different flags, and how the plan resolves them.
insert into crm_conflicts (run_id, email, lines, resolution)
select
    cast(:run_id as text),
    email,
    string_agg(source_file || ':' || cast(line as text), ', ' order by source_file, line),
    case
        when min(case when mailable then 1 else 0 end) = 0
            then 'most restrictive wins: not mailable'
        else 'mailable'
    end
from crm_contacts
where email is not null
group by email
having count(distinct
    case when do_not_email then 'd' else '-' end
    || case when unsubscribed then 'u' else '-' end
    || case when hard_bounced then 'b' else '-' end
) > 1
