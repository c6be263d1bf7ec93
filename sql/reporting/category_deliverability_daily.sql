-- category_deliverability_daily: delivery figures per category and UTC day.
--
-- The API only reports rolling windows (today, this week from Monday, this month from the 1st,
-- all UTC calendar windows up to the moment of reading), and every sync appends them to
-- category_statistics_snapshots. A day D gets its figures in one of three ways, the first that
-- applies (each part computed the same way: sent, bounced, complained, discarded, failed, total):
--
-- 1. week_difference: messages of the week before D+1 began, minus those before D began. "Before
--    the snapshot's day began" is a snapshot's week window minus its today window. The end comes
--    from the first snapshot of D+1, the start from the last snapshot of D, or is 0 when D is a
--    Monday (so D itself needs no snapshot). Equivalently: D's last today window plus the tail of
--    D after that snapshot. Needs D+1 in the same week (not after a Sunday) and a snapshot on D+1.
-- 2. month_difference: the same with the month windows (not after the last day of a month).
--    Covers a Sunday whose Monday is not the 1st, and the last day of a month not on a Sunday.
-- 3. today_window: the today window of D's last snapshot. It counts the messages created from
--    midnight up to that snapshot (covered_until) and misses later ones: today, before the next
--    sync, on a day without a snapshot the next day, and on a Sunday that ends a month.
-- A difference is used only if no part comes out negative: statuses of earlier messages moving
-- between the two snapshots (a late bounce of last week's message) shift counts between parts,
-- and a negative part shows that shift is larger than D's own figures. A smaller shift goes
-- unnoticed and lands on D. A day with no snapshot on it or the next day has no figures.
--
-- The synced messages of the same category and day (created up to covered_until) are counted
-- beside the figures. They are null for a day without any synced message (its partition not
-- loaded, or truly no mail that day), where there is nothing to compare with.
--
-- Days are UTC calendar days whatever the session time zone: timestamps go through
-- "at time zone 'UTC'" before they become dates.

with

category_statistics_snapshots as (
    select
        category_id,
        snapshot_at,
        statistics_window,
        sent,
        bounced,
        complained,
        discarded,
        failed,
        total
    from category_statistics_snapshots
),

categories as (
    select
        id as category_id,
        name as category_name
    from categories
),

messages as (
    select
        category_id,
        status,
        created_at
    from messages
    where category_id is not null
),

snapshot_days as (
    select
        category_id,
        snapshot_at,
        day,
        row_number() over (
            partition by category_id, day order by snapshot_at desc
        ) as from_last,
        row_number() over (
            partition by category_id, day order by snapshot_at
        ) as from_first
    from (
        select distinct
            category_id,
            snapshot_at,
            cast(snapshot_at at time zone 'UTC' as date) as day
        from category_statistics_snapshots
    ) as taken
),

closing_snapshots as (
    select category_id, day, snapshot_at
    from snapshot_days
    where from_last = 1
),

opening_snapshots as (
    select category_id, day, snapshot_at
    from snapshot_days
    where from_first = 1
),

-- What a week or month window held before the snapshot's day began.
before_day as (
    select
        period_window.category_id,
        period_window.snapshot_at,
        period_window.statistics_window as period,
        period_window.sent - today_window.sent as sent,
        period_window.bounced - today_window.bounced as bounced,
        period_window.complained - today_window.complained as complained,
        period_window.discarded - today_window.discarded as discarded,
        period_window.failed - today_window.failed as failed,
        period_window.total - today_window.total as total
    from category_statistics_snapshots as period_window
    inner join category_statistics_snapshots as today_window
        on today_window.category_id = period_window.category_id
        and today_window.snapshot_at = period_window.snapshot_at
        and today_window.statistics_window = 'today'
    where period_window.statistics_window in ('week', 'month')
),

today_figures as (
    select
        closing.category_id,
        closing.day,
        'today_window' as method,
        3 as preference,
        closing.snapshot_at as covered_until,
        today_window.sent,
        today_window.bounced,
        today_window.complained,
        today_window.discarded,
        today_window.failed,
        today_window.total
    from closing_snapshots as closing
    inner join category_statistics_snapshots as today_window
        on today_window.category_id = closing.category_id
        and today_window.snapshot_at = closing.snapshot_at
        and today_window.statistics_window = 'today'
),

periods as (
    select 'week' as period, 1 as preference
    union all
    select 'month' as period, 2 as preference
),

-- Days a difference could cover: those with a snapshot, and those before a day with one.
difference_days as (
    select category_id, day from closing_snapshots
    union
    select category_id, day - 1 as day from opening_snapshots
),

difference_figures as (
    select
        candidate.category_id,
        candidate.day,
        periods.period || '_difference' as method,
        periods.preference,
        cast(cast(candidate.day + 1 as timestamp) at time zone 'UTC' as timestamptz)
            as covered_until,
        day_end.sent - coalesce(day_start.sent, 0) as sent,
        day_end.bounced - coalesce(day_start.bounced, 0) as bounced,
        day_end.complained - coalesce(day_start.complained, 0) as complained,
        day_end.discarded - coalesce(day_start.discarded, 0) as discarded,
        day_end.failed - coalesce(day_start.failed, 0) as failed,
        day_end.total - coalesce(day_start.total, 0) as total
    from difference_days as candidate
    cross join periods
    inner join opening_snapshots as opening
        on opening.category_id = candidate.category_id
        and opening.day = candidate.day + 1
    inner join before_day as day_end
        on day_end.category_id = opening.category_id
        and day_end.snapshot_at = opening.snapshot_at
        and day_end.period = periods.period
    left join closing_snapshots as closing
        on closing.category_id = candidate.category_id
        and closing.day = candidate.day
    left join before_day as day_start
        on day_start.category_id = closing.category_id
        and day_start.snapshot_at = closing.snapshot_at
        and day_start.period = periods.period
    where
        -- D+1 is still in the same period: its window did not restart at midnight ...
        case
            when periods.period = 'week' then extract(isodow from candidate.day) <> 7
            else extract(day from candidate.day + 1) <> 1
        end
        -- ... and the start is known: a snapshot on D, or D opening the period.
        and (
            day_start.category_id is not null
            or case
                when periods.period = 'week' then extract(isodow from candidate.day) = 1
                else extract(day from candidate.day) = 1
            end
        )
),

candidate_figures as (
    select * from difference_figures
    union all
    select * from today_figures
),

daily_figures as (
    select
        category_id,
        day,
        method,
        covered_until,
        sent,
        bounced,
        complained,
        discarded,
        failed,
        total,
        row_number() over (
            partition by category_id, day order by preference
        ) as choice
    from candidate_figures
    where
        sent >= 0
        and bounced >= 0
        and complained >= 0
        and discarded >= 0
        and failed >= 0
        and total >= 0
),

chosen_figures as (
    select * from daily_figures where choice = 1
),

message_days as (
    select
        category_id,
        status,
        created_at,
        cast(created_at at time zone 'UTC' as date) as day
    from messages
),

synced_days as (
    select distinct day from message_days
),

category_days as (
    select category_id, day from chosen_figures
    union
    select category_id, day from message_days
),

message_counts as (
    select
        category_day.category_id,
        category_day.day,
        sum(case when message.status = 'Sent' then 1 else 0 end) as sent,
        sum(case when message.status = 'Bounced' then 1 else 0 end) as bounced,
        sum(case when message.status = 'Complained' then 1 else 0 end) as complained,
        sum(case when message.status = 'Discarded' then 1 else 0 end) as discarded,
        sum(case when message.status = 'Failed' then 1 else 0 end) as failed,
        sum(case when message.status = 'Queued' then 1 else 0 end) as queued
    from category_days as category_day
    left join chosen_figures as figures
        on figures.category_id = category_day.category_id
        and figures.day = category_day.day
    inner join message_days as message
        on message.category_id = category_day.category_id
        and message.day = category_day.day
        and (figures.covered_until is null or message.created_at <= figures.covered_until)
    group by category_day.category_id, category_day.day
),

-- Zero where the day's messages are synced but none matched; null where none are synced.
cross_checked as (
    select
        category_day.category_id,
        category_day.day,
        case when synced.day is not null then coalesce(counted.sent, 0) end as sent,
        case when synced.day is not null then coalesce(counted.bounced, 0) end as bounced,
        case when synced.day is not null then coalesce(counted.complained, 0) end as complained,
        case when synced.day is not null then coalesce(counted.discarded, 0) end as discarded,
        case when synced.day is not null then coalesce(counted.failed, 0) end as failed,
        case when synced.day is not null then coalesce(counted.queued, 0) end as queued
    from category_days as category_day
    left join synced_days as synced
        on synced.day = category_day.day
    left join message_counts as counted
        on counted.category_id = category_day.category_id
        and counted.day = category_day.day
),

final as (
    select
        category_day.day,
        category_day.category_id,
        categories.category_name,
        figures.sent,
        figures.bounced,
        figures.complained,
        figures.discarded,
        figures.failed,
        figures.total,
        cast(figures.bounced as double precision) / nullif(figures.total, 0) as bounce_rate,
        cast(figures.complained as double precision) / nullif(figures.total, 0)
            as complaint_rate,
        figures.method,
        figures.covered_until,
        figures.method <> 'today_window' as is_complete,
        checked.sent as messages_sent,
        checked.bounced as messages_bounced,
        checked.complained as messages_complained,
        checked.discarded as messages_discarded,
        checked.failed as messages_failed,
        checked.queued as messages_queued,
        checked.sent + checked.bounced + checked.complained + checked.discarded + checked.failed
            as messages_total,
        figures.total - (
            checked.sent + checked.bounced + checked.complained + checked.discarded
            + checked.failed
        ) as total_difference,
        figures.total = (
            checked.sent + checked.bounced + checked.complained + checked.discarded
            + checked.failed
        ) as matches_messages
    from category_days as category_day
    left join chosen_figures as figures
        on figures.category_id = category_day.category_id
        and figures.day = category_day.day
    left join cross_checked as checked
        on checked.category_id = category_day.category_id
        and checked.day = category_day.day
    left join categories
        on categories.category_id = category_day.category_id
)

select * from final
