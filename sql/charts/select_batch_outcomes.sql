-- Batches of both providers, newest first, with their counts per outcome for the chart.
select
    provider,
    batch_id,
    name,
    total_count,
    sent_count,
    bounced_count,
    complained_count,
    discarded_count,
    failed_count,
    pending_count
from batch_statistics
where created_at is not null
order by provider desc, created_at desc, batch_id
