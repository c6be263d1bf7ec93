-- EviNotice certified-mail batches with their progress and counts, merged on id.
create table if not exists evinotice_batches (
    id text not null primary key, -- Batch id (GUID); unique (on DuckDB kept so by the loads, without an index)
    state text, -- Draft, Scheduled, Submitted, Processing, Processed, Sent, Completed, or as it comes
    description text, -- Batch description
    site_id text, -- Owner site
    site_name text, -- Owner site name
    submitter text, -- Who submitted the batch
    total_count bigint, -- Recipients in the batch
    sent_count bigint, -- Recipients sent so far
    failed_count bigint, -- Recipients that failed so far
    progress_percentage double precision, -- (sent + failed) / total, in percent
    created_at timestamptz, -- CreationDate
    scheduled_for timestamptz, -- ScheduledFor
    started_on timestamptz, -- StartedOn
    processed_on timestamptz, -- ProcessedOn
    synced_at timestamptz, -- When this row was last written
    row_hash text, -- Hash of the source record
    raw json -- The whole source record
);
