-- Claims new batches from the staged rows (committed before any is sent). A batch another
-- send claimed first is left alone: the read-back shows it is not ours.
insert into campaign_results (
    batch_key, campaign, provider, content_key, category_id, subject, batch_number,
    recipients, run_id, claim, state, attempts, claimed_at, last_attempt_at
)
select
    batch_key, campaign, provider, content_key, category_id, subject, batch_number,
    recipients, run_id, claim, state, attempts, claimed_at, last_attempt_at
from {stage}
on conflict (batch_key) do nothing
