-- campaign_performance: one row per campaign.
--
-- Plan figures from campaigns, batches from the ledger (campaign_results), delivery from the
-- synced messages of the batches the ledger created (a batch whose messages lie in days not
-- synced yet counts in not_synced). Certified (EviNotice) campaigns: the batches' own counts
-- from evinotice_batches, and each recipient's evidence from evinotice_evidence, joined by the
-- LookupKey the build gave it: md5(batch_key || '|' || recipient_key).

with

campaigns as (
    select
        name,
        provider,
        status,
        category_id,
        subject,
        send_at,
        planned_at,
        send_started_at,
        send_finished_at,
        audience_rows,
        recipients,
        excluded,
        excluded_by_reason,
        batches_planned,
        cancelled_at,
        cancel_reason
    from campaigns
),

campaign_results as (
    select campaign, provider, batch_key, state, recipients, batch_id
    from campaign_results
),

messages as (
    select batch_id, status
    from messages
),

evinotice_batches as (
    select id, total_count, sent_count, failed_count
    from evinotice_batches
),

campaign_batch_recipients as (
    select batch_key, recipient_key
    from campaign_batch_recipients
),

evinotice_evidence as (
    select id, lookup_key, state, outcome, last_update_date
    from evinotice_evidence
),

ledger as (
    select
        campaign,
        sum(case when state = 'done' then 1 else 0 end) as batches_done,
        sum(case when state = 'rejected' then 1 else 0 end) as batches_rejected,
        sum(case when state in ('sending', 'ambiguous', 'retry') then 1 else 0 end)
            as batches_unsettled,
        sum(case when state = 'done' then recipients else 0 end) as recipients_sent
    from campaign_results
    group by campaign
),

delivery as (
    select
        r.campaign,
        count(*) as messages,
        sum(case when m.status = 'Sent' then 1 else 0 end) as sent,
        sum(case when m.status = 'Bounced' then 1 else 0 end) as bounced,
        sum(case when m.status = 'Complained' then 1 else 0 end) as complained,
        sum(case when m.status = 'Failed' then 1 else 0 end) as failed,
        sum(case when m.status = 'Discarded' then 1 else 0 end) as discarded,
        sum(case when m.status = 'Queued' then 1 else 0 end) as pending
    from campaign_results as r
    join messages as m on m.batch_id = r.batch_id
    where r.batch_id is not null
    group by r.campaign
),

certified_batches as (
    select
        r.campaign,
        sum(b.total_count) as evinotice_recipients,
        sum(b.sent_count) as evinotice_sent,
        sum(b.failed_count) as evinotice_failed
    from campaign_results as r
    join evinotice_batches as b on b.id = r.batch_id
    where r.provider = 'evinotice'
    group by r.campaign
),

certified_recipients as (
    select
        r.campaign,
        md5(b.batch_key || '|' || b.recipient_key) as lookup_key
    from campaign_results as r
    join campaign_batch_recipients as b on b.batch_key = r.batch_key
    where r.provider = 'evinotice' and r.state in ('done', 'reverted')
),

-- One evidence outcome per recipient: its latest record (a recipient may have several).
latest_evidence as (
    select lookup_key, state, outcome
    from (
        select
            lookup_key,
            state,
            outcome,
            row_number() over (
                partition by lookup_key order by last_update_date desc nulls last, id desc
            ) as rank_in_key
        from evinotice_evidence
        where lookup_key is not null
    ) as ranked
    where rank_in_key = 1
),

evidence as (
    select
        c.campaign,
        count(*) as certified_recipients,
        sum(case when e.lookup_key is not null then 1 else 0 end) as evidence_records,
        sum(case when e.outcome = 'Delivered' then 1 else 0 end) as evidence_delivered,
        sum(case when e.outcome = 'Read' then 1 else 0 end) as evidence_read,
        sum(case when e.outcome = 'Accepted' then 1 else 0 end) as evidence_accepted,
        sum(case when e.outcome = 'Rejected' then 1 else 0 end) as evidence_rejected,
        sum(case when e.outcome = 'Refused' then 1 else 0 end) as evidence_refused,
        sum(
            case
                when e.outcome in ('Failed', 'Cancelled') or e.state = 'Failed' then 1 else 0
            end
        ) as evidence_failed
    from certified_recipients as c
    left join latest_evidence as e on e.lookup_key = c.lookup_key
    group by c.campaign
),

joined as (
    select
        c.name as campaign,
        c.provider,
        c.status,
        c.category_id,
        c.subject,
        c.send_at,
        c.planned_at,
        c.send_started_at,
        c.send_finished_at,
        c.audience_rows,
        c.recipients as planned_recipients,
        c.excluded,
        c.excluded_by_reason,
        c.batches_planned,
        coalesce(l.batches_done, 0) as batches_done,
        coalesce(l.batches_rejected, 0) as batches_rejected,
        coalesce(l.batches_unsettled, 0) as batches_unsettled,
        coalesce(l.recipients_sent, 0) as recipients_sent,
        coalesce(d.messages, 0) as messages,
        coalesce(d.sent, 0) as sent,
        coalesce(d.bounced, 0) as bounced,
        coalesce(d.complained, 0) as complained,
        coalesce(d.failed, 0) as failed,
        coalesce(d.discarded, 0) as discarded,
        coalesce(d.pending, 0) as pending,
        c.cancelled_at,
        c.cancel_reason,
        cb.evinotice_recipients,
        cb.evinotice_sent,
        cb.evinotice_failed,
        e.certified_recipients,
        e.evidence_records,
        e.evidence_delivered,
        e.evidence_read,
        e.evidence_accepted,
        e.evidence_rejected,
        e.evidence_refused,
        e.evidence_failed
    from campaigns as c
    left join ledger as l on l.campaign = c.name
    left join delivery as d on d.campaign = c.name
    left join certified_batches as cb on cb.campaign = c.name
    left join evidence as e on e.campaign = c.name
),

final as (
    select
        campaign,
        provider,
        status,
        category_id,
        subject,
        send_at,
        planned_at,
        send_started_at,
        send_finished_at,
        audience_rows,
        planned_recipients,
        excluded,
        excluded_by_reason,
        batches_planned,
        batches_done,
        batches_rejected,
        batches_unsettled,
        recipients_sent,
        messages,
        sent,
        bounced,
        complained,
        failed,
        discarded,
        pending,
        case when recipients_sent > messages then recipients_sent - messages else 0 end
            as not_synced,
        case when messages > 0 then cast(sent as double precision) / messages end as sent_rate,
        case when messages > 0 then cast(bounced as double precision) / messages end
            as bounce_rate,
        case when messages > 0 then cast(complained as double precision) / messages end
            as complaint_rate,
        case when messages > 0 then cast(failed + discarded as double precision) / messages end
            as failure_rate,
        cancelled_at,
        cancel_reason,
        evinotice_recipients,
        evinotice_sent,
        evinotice_failed,
        certified_recipients,
        evidence_records,
        evidence_delivered,
        evidence_read,
        evidence_accepted,
        evidence_rejected,
        evidence_refused,
        evidence_failed,
        certified_recipients - evidence_delivered - evidence_read - evidence_accepted
        - evidence_rejected - evidence_refused - evidence_failed as evidence_pending
    from joined
)

select * from final
