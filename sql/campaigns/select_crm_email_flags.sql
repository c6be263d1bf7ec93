-- The CRM's do-not-email, unsubscribed and hard-bounced flags per address that has any.
select
    email,
    max(case when do_not_email then 1 else 0 end) as do_not_email,
    max(case when unsubscribed then 1 else 0 end) as unsubscribed,
    max(case when hard_bounced then 1 else 0 end) as hard_bounced
from crm_contacts
where email is not null and (do_not_email or unsubscribed or hard_bounced)
group by email
