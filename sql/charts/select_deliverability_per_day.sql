-- Each day's deliveries per category for the deliverability chart: the statistics' figures,
-- then the synced messages' (used on days no snapshot covers).
select
    day,
    coalesce(category_name, category_id) as category,
    total,
    sent,
    bounced,
    complained,
    discarded,
    failed,
    messages_sent,
    messages_bounced,
    messages_complained,
    messages_discarded,
    messages_failed
from category_deliverability_daily
order by day
