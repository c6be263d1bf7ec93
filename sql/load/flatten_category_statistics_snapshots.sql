-- category_statistics_snapshots rows from a chunk of categories as JSON lines (relation
-- `notifsync_arrow_chunk`): one per category and window the record has figures for (today, week, month).
with parsed as (
    select json_transform(
        raw,
        '{"id": "VARCHAR", "statistics": {
            "today": {"sent": "BIGINT", "bounced": "BIGINT", "complained": "BIGINT", "discarded": "BIGINT", "failed": "BIGINT", "total": "BIGINT"},
            "week": {"sent": "BIGINT", "bounced": "BIGINT", "complained": "BIGINT", "discarded": "BIGINT", "failed": "BIGINT", "total": "BIGINT"},
            "month": {"sent": "BIGINT", "bounced": "BIGINT", "complained": "BIGINT", "discarded": "BIGINT", "failed": "BIGINT", "total": "BIGINT"}}}'
    ) as r
    from notifsync_arrow_chunk
),
windows as (
    select r.id as category_id, 'today' as statistics_window, r.statistics.today as f, 1 as position from parsed
    union all
    select r.id, 'week', r.statistics.week, 2 from parsed
    union all
    select r.id, 'month', r.statistics.month, 3 from parsed
)
select
    category_id,
    statistics_window,
    f.sent as sent,
    f.bounced as bounced,
    f.complained as complained,
    f.discarded as discarded,
    f.failed as failed,
    f.total as total
from windows
where f is not null
order by category_id, position
