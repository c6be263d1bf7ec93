-- One row per campaign: its audience and what the plan excluded (by reason), the batches the
-- ledger sent, and what became of the messages (from the synced messages of those batches).
-- Rebuilt as a whole after each campaign send and each sync.
create table if not exists campaign_performance (
    campaign text not null primary key, -- Campaign name (campaigns.name)
    provider text, -- marketplace, or evinotice (certified)
    status text, -- planned, dry_run, stopped_by_guard, waiting, sending, sent, cancelled; certified also scheduled or reverted
    category_id text, -- Category the emails are sent in
    subject text, -- Email subject
    send_at timestamptz, -- When it was due (null: sent when run)
    planned_at timestamptz, -- When the current plan was made
    send_started_at timestamptz, -- When the first batch was claimed
    send_finished_at timestamptz, -- When the last send ended
    audience_rows bigint, -- Rows the audience returned at the last plan
    planned_recipients bigint, -- Audience rows the last plan included
    excluded bigint, -- Audience rows the last plan excluded
    excluded_by_reason json, -- Excluded rows counted by reason (already_reached, opted_out, frequency_cap, ...)
    batches_planned bigint, -- Batches the last plan split its recipients into
    batches_done bigint, -- Batches confirmed created on the platform
    batches_rejected bigint, -- Batches the platform refused (problem details in campaign_results)
    batches_unsettled bigint, -- Batches whose outcome is not known yet (looked up before any resend)
    recipients_sent bigint, -- Recipients of the batches done
    messages bigint, -- Synced messages of the campaign's batches
    sent bigint, -- Messages Sent
    bounced bigint, -- Messages Bounced
    complained bigint, -- Messages Complained
    failed bigint, -- Messages Failed
    discarded bigint, -- Messages Discarded (blocked or opted-out recipients)
    pending bigint, -- Messages still Queued
    not_synced bigint, -- Recipients sent whose message is not in messages yet
    sent_rate double precision, -- sent / messages (null when no messages)
    bounce_rate double precision, -- bounced / messages
    complaint_rate double precision, -- complained / messages
    failure_rate double precision, -- (failed + discarded) / messages
    cancelled_at timestamptz, -- When a version was cancelled
    cancel_reason text, -- Why it was cancelled
    evinotice_recipients bigint, -- Certified: recipients on the campaign's EviNotice batches (the batches' TotalCount, from evinotice_batches)
    evinotice_sent bigint, -- Certified: recipients the batches report sent (SentCount)
    evinotice_failed bigint, -- Certified: recipients the batches report failed (FailedCount)
    certified_recipients bigint, -- Certified: recipients the ledger put on scheduled (or reverted) batches
    evidence_records bigint, -- Certified: those recipients with an evidence record synced (joined by LookupKey)
    evidence_delivered bigint, -- Certified: latest evidence outcome Delivered (not yet read or answered)
    evidence_read bigint, -- Certified: latest evidence outcome Read
    evidence_accepted bigint, -- Certified: latest evidence outcome Accepted
    evidence_rejected bigint, -- Certified: latest evidence outcome Rejected
    evidence_refused bigint, -- Certified: latest evidence outcome Refused
    evidence_failed bigint, -- Certified: latest evidence outcome Failed or Cancelled, or state Failed
    evidence_pending bigint -- Certified: recipients with no final outcome yet (no record, or None / Certified / Sent)
);
