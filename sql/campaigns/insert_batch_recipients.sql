-- The recipients of a batch this send holds, from the plan, written with the claim.
insert into campaign_batch_recipients (batch_key, recipient_key, campaign, contact_id, email)
select p.batch_key, coalesce(p.contact_id, p.email), p.campaign, p.contact_id, p.email
from campaign_plan as p
where p.batch_key = :batch_key
  and p.campaign = :campaign
  and exists (
      select 1 from campaign_results as r where r.batch_key = :batch_key and r.claim = :claim
  )
  and not exists (
      select 1 from campaign_batch_recipients as b where b.batch_key = :batch_key
  )
