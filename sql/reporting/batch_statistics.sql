-- batch_statistics: one row per batch from both providers, in one shape.
--
-- Marketplace batches are counted from their synced messages (a batch whose messages lie in
-- days not synced yet shows 0). EviNotice batches carry their own counts, progress, state and
-- timings. Columns a provider does not have are null, never 0.

with

batches as (
    select
        id,
        subject,
        category_id,
        category_name,
        account_id,
        account_name,
        created_at
    from batches
),

messages as (
    select
        batch_id,
        status,
        created_at
    from messages
),

evinotice_batches as (
    select
        id,
        state,
        description,
        site_id,
        site_name,
        total_count,
        sent_count,
        failed_count,
        progress_percentage,
        created_at,
        scheduled_for,
        started_on,
        processed_on
    from evinotice_batches
),

message_counts as (
    select
        batch_id,
        count(*) as total_count,
        sum(case when status = 'Sent' then 1 else 0 end) as sent_count,
        sum(case when status = 'Failed' then 1 else 0 end) as failed_count,
        sum(case when status = 'Bounced' then 1 else 0 end) as bounced_count,
        sum(case when status = 'Complained' then 1 else 0 end) as complained_count,
        sum(case when status = 'Discarded' then 1 else 0 end) as discarded_count,
        sum(case when status = 'Queued' then 1 else 0 end) as queued_count,
        min(created_at) as first_message_at,
        max(created_at) as last_message_at
    from messages
    group by batch_id
),

marketplace as (
    select
        'marketplace' as provider,
        batches.id as batch_id,
        batches.subject as name,
        batches.category_id,
        batches.category_name,
        batches.account_id as owner_id,
        batches.account_name as owner_name,
        case
            when counted.batch_id is null then null
            when counted.queued_count > 0 then 'Processing'
            else 'Processed'
        end as state,
        coalesce(counted.total_count, 0) as total_count,
        coalesce(counted.sent_count, 0) as sent_count,
        coalesce(counted.failed_count, 0) as failed_count,
        coalesce(counted.bounced_count, 0) as bounced_count,
        coalesce(counted.complained_count, 0) as complained_count,
        coalesce(counted.discarded_count, 0) as discarded_count,
        coalesce(counted.queued_count, 0) as pending_count,
        100 * cast(counted.total_count - counted.queued_count as double precision)
            / nullif(counted.total_count, 0) as progress_percentage,
        batches.created_at,
        cast(null as timestamptz) as scheduled_for,
        counted.first_message_at as started_at,
        counted.last_message_at as finished_at
    from batches
    left join message_counts as counted
        on counted.batch_id = batches.id
),

evinotice as (
    select
        'evinotice' as provider,
        id as batch_id,
        description as name,
        cast(null as text) as category_id,
        cast(null as text) as category_name,
        site_id as owner_id,
        site_name as owner_name,
        state,
        total_count,
        sent_count,
        failed_count,
        cast(null as bigint) as bounced_count,
        cast(null as bigint) as complained_count,
        cast(null as bigint) as discarded_count,
        total_count - coalesce(sent_count, 0) - coalesce(failed_count, 0) as pending_count,
        progress_percentage,
        created_at,
        scheduled_for,
        started_on as started_at,
        processed_on as finished_at
    from evinotice_batches
),

both_providers as (
    select * from marketplace
    union all
    select * from evinotice
),

final as (
    select
        provider,
        batch_id,
        name,
        category_id,
        category_name,
        owner_id,
        owner_name,
        state,
        total_count,
        sent_count,
        failed_count,
        bounced_count,
        complained_count,
        discarded_count,
        pending_count,
        progress_percentage,
        cast(sent_count as double precision) / nullif(total_count, 0) as sent_rate,
        cast(failed_count as double precision) / nullif(total_count, 0) as failure_rate,
        cast(bounced_count as double precision) / nullif(total_count, 0) as bounce_rate,
        cast(complained_count as double precision) / nullif(total_count, 0) as complaint_rate,
        created_at,
        scheduled_for,
        started_at,
        finished_at
    from both_providers
)

select * from final
