-- A certified campaign's batches in the ledger: the step each stands at and its batch id.
select batch_key, batch_number, recipients, state, batch_id, attempts, claimed_at
from campaign_results
where campaign = :campaign
order by batch_number, batch_key
