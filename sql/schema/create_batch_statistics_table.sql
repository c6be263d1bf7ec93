-- One row per batch from both providers in one shape: Marketplace batches with their synced
-- messages counted by status, and EviNotice batches with their reported counts, progress,
-- state and timings. Rebuilt as a whole after each sync.
create table if not exists batch_statistics (
    provider text not null, -- marketplace or evinotice
    batch_id text not null, -- Batch id (batches.id or evinotice_batches.id)
    name text, -- Marketplace: email subject; EviNotice: batch description
    category_id text, -- Marketplace: category the batch was sent to; null for EviNotice
    category_name text, -- Marketplace: category name at send time; null for EviNotice
    owner_id text, -- Marketplace: sending account; EviNotice: owner site
    owner_name text, -- Name of the sending account or owner site
    state text, -- EviNotice: Draft, Scheduled, Submitted, Processing or Processed; Marketplace: Processing while a message is Queued, else Processed (null without synced messages)
    total_count bigint, -- Marketplace: messages synced for the batch; EviNotice: recipients
    sent_count bigint, -- Messages / recipients sent
    failed_count bigint, -- Messages / recipients that failed
    bounced_count bigint, -- Marketplace messages bounced; null for EviNotice
    complained_count bigint, -- Marketplace messages marked as spam; null for EviNotice
    discarded_count bigint, -- Marketplace messages discarded; null for EviNotice
    pending_count bigint, -- Not done yet: Marketplace messages Queued; EviNotice total - sent - failed
    progress_percentage double precision, -- Share of the batch done, in percent (EviNotice as reported; Marketplace: 100 * (total - queued) / total)
    sent_rate double precision, -- sent_count / total_count; null when total is 0 or unknown
    failure_rate double precision, -- failed_count / total_count
    bounce_rate double precision, -- bounced_count / total_count (Marketplace only)
    complaint_rate double precision, -- complained_count / total_count (Marketplace only)
    created_at timestamptz, -- When the batch was created
    scheduled_for timestamptz, -- EviNotice: when the batch is scheduled to go; null for Marketplace
    started_at timestamptz, -- Marketplace: first message created; EviNotice: StartedOn
    finished_at timestamptz, -- Marketplace: last message created; EviNotice: ProcessedOn
    primary key (provider, batch_id)
);
