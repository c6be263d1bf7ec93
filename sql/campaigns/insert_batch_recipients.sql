-- The recipients of the batches this send just claimed, from the plan, written with the
-- claims (a batch another send holds, or whose recipients are already there, is skipped).
insert into campaign_batch_recipients (batch_key, recipient_key, campaign, contact_id, email)
select p.batch_key, coalesce(p.contact_id, p.email), p.campaign, p.contact_id, p.email
from campaign_plan as p
where p.campaign = :campaign
  and p.included
  and p.batch_key in :batch_keys
  and exists (
      select 1 from campaign_results as r where r.batch_key = p.batch_key and r.claim = :claim
  )
  and not exists (
      select 1 from campaign_batch_recipients as b where b.batch_key = p.batch_key
  )
