-- Cancels one version of a campaign (also one never planned): its batches not yet claimed
-- are never sent.
insert into campaigns (
    name, provider, content_key, source, status, cancelled_content_key, cancelled_at,
    cancel_reason
)
values (
    :name, :provider, :content_key, :source, 'cancelled', :content_key,
    cast(:now as timestamptz), :reason
)
on conflict (name) do update set
    status = 'cancelled',
    cancelled_content_key = excluded.cancelled_content_key,
    cancelled_at = excluded.cancelled_at,
    cancel_reason = excluded.cancel_reason
