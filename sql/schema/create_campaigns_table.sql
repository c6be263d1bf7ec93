-- One row per campaign (by name): its latest version, plan figures, guard verdict and where
-- it stands (planned, dry_run, stopped_by_guard, waiting, sending, sent, cancelled).
create table if not exists campaigns (
    name text not null primary key, -- The campaign's stable name (its key)
    provider text, -- marketplace (evinotice later)
    content_key text, -- Hash of the campaign file's content: a changed file is a new version
    source text, -- The campaign file, or "run config"
    category_id text, -- Category the emails are sent in
    subject text, -- Email subject
    body text, -- Email body
    definition json, -- The whole campaign as validated (what the send step sends)
    send_at timestamptz, -- When it is due (null: as soon as it is run)
    status text, -- planned, dry_run, stopped_by_guard, waiting, sending, sent, cancelled
    audience_rows bigint, -- Rows the audience returned
    recipients bigint, -- Audience rows included
    excluded bigint, -- Audience rows excluded
    excluded_by_reason json, -- Excluded rows counted by reason
    batches_planned bigint, -- Batches the recipients were split into
    guards_tripped json, -- Guards that failed, with their figures
    overrides json, -- Guards overridden by run config
    override_reason text, -- The reason given for the override
    planned_at timestamptz, -- When the current plan was made
    run_id text, -- Run that made the current plan
    send_started_at timestamptz, -- When the first batch of this version was claimed
    send_finished_at timestamptz, -- When the last send of this version ended
    cancelled_content_key text, -- The version that was cancelled
    cancelled_at timestamptz, -- When it was cancelled
    cancel_reason text -- Why it was cancelled
);
