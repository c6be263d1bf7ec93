-- Opt-outs whose contact is not in contacts.
select count(*)
from contact_opt_outs as o
where not exists (select 1 from contacts as c where c.id = o.contact_id)
