-- Contacts the current plan's done actions touched, whichever run did them: an apply that
-- stopped before its refresh leaves them for the next one to re-read.
select distinct r.contact_id
from pushback_results as r
join reconciliation_plan as p on p.action_key = r.action_key
where r.state = 'done' and r.contact_id is not null
order by r.contact_id
