-- The recipients of one certified batch with what the upload carries, in upload order. A
-- plan made after the claim marks them already_reached (no batch): that row still holds them.
select
    b.recipient_key,
    p.name as display_name,
    v.legal_name,
    v.variables
from campaign_batch_recipients as b
left join campaign_plan as p
    on p.campaign = b.campaign
    and p.email = b.recipient_key
    and ((p.included and p.batch_key = b.batch_key) or p.reason = 'already_reached')
left join campaign_plan_variables as v
    on v.campaign = p.campaign and v.audience_row = p.audience_row
where b.batch_key = :batch_key
order by b.recipient_key
