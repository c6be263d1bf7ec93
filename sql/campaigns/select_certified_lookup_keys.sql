-- The LookupKeys a certified campaign put on its recipients (what its evidence is read by).
select md5(b.batch_key || '|' || b.recipient_key) as lookup_key
from campaign_results as r
join campaign_batch_recipients as b on b.batch_key = r.batch_key
where r.campaign = :campaign and r.provider = 'evinotice' and r.state in ('done', 'reverted')
order by 1
