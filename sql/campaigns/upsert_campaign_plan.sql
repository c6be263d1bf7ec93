-- A campaign's row after planning: its version, plan figures and guard verdict. A cancel of
-- the same version stays in force.
insert into campaigns (
    name, provider, content_key, source, category_id, subject, body, definition, send_at, status,
    audience_rows, recipients, excluded, excluded_by_reason, batches_planned,
    guards_tripped, overrides, override_reason, planned_at, run_id
)
values (
    :name, :provider, :content_key, :source, :category_id, :subject, :body,
    cast(:definition as json),
    cast(:send_at as timestamptz), :status, :audience_rows, :recipients, :excluded,
    cast(:excluded_by_reason as json), :batches_planned, cast(:guards_tripped as json),
    cast(:overrides as json), :override_reason, cast(:planned_at as timestamptz), :run_id
)
on conflict (name) do update set
    provider = excluded.provider,
    content_key = excluded.content_key,
    source = excluded.source,
    category_id = excluded.category_id,
    subject = excluded.subject,
    body = excluded.body,
    definition = excluded.definition,
    send_at = excluded.send_at,
    status = case
        when campaigns.cancelled_content_key = excluded.content_key then 'cancelled'
        else excluded.status
    end,
    audience_rows = excluded.audience_rows,
    recipients = excluded.recipients,
    excluded = excluded.excluded,
    excluded_by_reason = excluded.excluded_by_reason,
    batches_planned = excluded.batches_planned,
    guards_tripped = excluded.guards_tripped,
    overrides = excluded.overrides,
    override_reason = excluded.override_reason,
    planned_at = excluded.planned_at,
    run_id = excluded.run_id
