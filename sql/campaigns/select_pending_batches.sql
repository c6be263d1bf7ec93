-- Batches of the campaign an earlier send left unsettled: each may have been created, so
-- it is looked up on the platform before it is sent again.
select batch_key, batch_number, recipients, state, attempts, claim, content_key, category_id,
       subject, claimed_at
from campaign_results
where campaign = :campaign and state in ('sending', 'ambiguous', 'retry')
order by batch_number, batch_key
