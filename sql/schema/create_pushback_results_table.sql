-- The push-back ledger: each planned action by its stable key, written before it is sent,
-- and its outcome. A key already done or permanently rejected is never sent again.
create table if not exists pushback_results (
    action_key text not null primary key, -- reconciliation_plan.action_key
    run_id text, -- Reconcile run that last tried it
    claim text, -- The apply that holds it (one id per apply call), so two applies never both send it
    action text, -- create, block, unblock or update
    email text, -- Email the action is about
    contact_id text, -- Platform contact acted on (for a create: the one created)
    state text, -- sending, done, rejected (permanent), retry (tried again next run), ambiguous
    attempts bigint, -- Times it was sent
    http_status bigint, -- Status of the last failed answer
    problem_title text, -- The API's problem title
    problem_detail text, -- The API's problem detail
    field_errors json, -- The API's field errors
    first_attempt_at timestamptz, -- First time it was sent
    last_attempt_at timestamptz, -- Last time it was sent
    done_at timestamptz, -- When it was confirmed done
    contact_updated_at timestamptz, -- The contact's audit.updated.at as the API answered the action
    contact_blocked_reason text -- The contact's blocked reason as the API answered the action
);
