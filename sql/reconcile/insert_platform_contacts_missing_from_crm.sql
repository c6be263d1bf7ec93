-- Active platform contacts no CRM line lists (reported only; the connector never deletes).
insert into platform_contacts_missing_from_crm (run_id, contact_id, email, status)
select cast(:run_id as text), c.id, c.email, c.status
from contacts as c
where c.deleted_at is null
  and c.status = 'Active'
  and not exists (select 1 from crm_contacts as crm where crm.email = c.email_key)
