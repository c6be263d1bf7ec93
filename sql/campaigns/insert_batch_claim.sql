-- Claims a new batch (committed before the request goes out). When another send claimed it
-- first, nothing is inserted and the read-back shows it is not ours.
insert into campaign_results (
    batch_key, campaign, provider, content_key, category_id, subject, batch_number,
    recipients, run_id, claim, state, attempts, claimed_at, last_attempt_at
)
values (
    :batch_key, :campaign, :provider, :content_key, :category_id, :subject, :batch_number,
    :recipients, :run_id, :claim, 'sending', 1, :now, :now
)
on conflict (batch_key) do nothing
