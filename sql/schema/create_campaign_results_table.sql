-- The campaign send ledger and results: one row per batch (chunk of a campaign's audience),
-- written before the batch is sent, then its outcome. A batch done or refused is never sent
-- again; one whose outcome is unknown is looked up on the platform before anything is resent.
create table if not exists campaign_results (
    batch_key text not null primary key, -- Stable key of the chunk (campaign, version, recipients)
    campaign text, -- Campaign name (campaigns.name)
    provider text, -- marketplace or evinotice (certified)
    content_key text, -- Campaign version sent
    category_id text, -- Category the batch was sent in (what a lookup searches by)
    subject text, -- Subject the batch was sent with (what a lookup searches by)
    batch_number bigint, -- Chunk number in the plan that claimed it
    recipients bigint, -- Recipients in the batch
    run_id text, -- Run that last tried it
    claim text, -- The send that holds it, so two sends never both send it
    state text, -- sending, done, rejected (refused for good), ambiguous or retry (looked up first next time)
    attempts bigint, -- Times the create was sent
    batch_id text, -- The platform's batch id once known
    resolved_by text, -- answer (the create's own answer) or lookup (found on the platform)
    http_status bigint, -- Status of the last refused answer
    problem_title text, -- The API's problem title
    problem_detail text, -- The API's problem detail
    field_errors json, -- The API's field errors
    claimed_at timestamptz, -- First claim, the start of the lookup window
    last_attempt_at timestamptz, -- Last time it was sent or looked up
    done_at timestamptz -- When it was confirmed created
);
