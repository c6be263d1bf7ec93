-- The plan's batches the ledger has never seen.
select p.batch_key, min(p.batch_number) as batch_number, count(*) as recipients
from campaign_plan as p
where p.campaign = :campaign
  and p.included
  and not exists (select 1 from campaign_results as r where r.batch_key = p.batch_key)
group by p.batch_key
order by min(p.batch_number)
