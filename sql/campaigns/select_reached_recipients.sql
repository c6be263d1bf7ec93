-- Recipients a batch of this campaign (not refused) already holds.
select distinct r.recipient_key
from campaign_batch_recipients as r
join campaign_results as b on b.batch_key = r.batch_key
where b.campaign = :campaign and b.state <> 'rejected'
