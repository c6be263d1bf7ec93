-- Category days whose statistics total differs from the synced messages of that day.
select count(*)
from category_deliverability_daily
where matches_messages = false
