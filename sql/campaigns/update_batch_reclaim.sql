-- Claims a batch tried before, only if nobody touched it since this send read it (same
-- claim, not settled): two sends at once cannot both send it.
update campaign_results
set state = 'sending', run_id = :run_id, claim = :claim, last_attempt_at = :now
where batch_key = :batch_key
  and claim is not distinct from :previous_claim
  and state in ('sending', 'ambiguous', 'retry')
