-- messages rows from a chunk of JSON lines (relation `notifsync_arrow_chunk`), as
-- connector/marketplace/records.py `message_rows` builds them one at a time. The read asks
-- for the records without their body; a body sent anyway is left out of raw (it repeats the
-- batch's), as the row builder does: this statement gives raw only for such a line.
with parsed as (
    select
        raw,
        json_transform(
            raw,
            '{"id": "VARCHAR", "status": "VARCHAR", "subject": "VARCHAR",
              "batch": {"id": "VARCHAR"}, "contact": {"id": "VARCHAR", "email": "VARCHAR"},
              "category": {"id": "VARCHAR"}, "account": {"id": "VARCHAR"},
              "audit": {"created": {"at": "VARCHAR"}, "updated": {"at": "VARCHAR"}}}'
        ) as r
    from notifsync_arrow_chunk
)
select
    r.id as id,
    r.batch.id as batch_id,
    r.contact.id as contact_id,
    r.contact.email as contact_email,
    r.category.id as category_id,
    r.account.id as account_id,
    r.status as status,
    r.subject as subject,
    cast(r.audit.created.at as timestamptz) as created_at,
    cast(r.audit.updated.at as timestamptz) as updated_at,
    -- Only a line that changes: connector/warehouse/json_lines.py `flatten` keeps the others
    -- as they came. A key "body" is in the text as such or spelled with a \u escape, so the
    -- test for it is cheap before the JSON is read again.
    case
        when (contains(raw, '"body"') or contains(raw, '\u')) and json_exists(raw, '$.body')
            then cast(json_merge_patch(raw, '{"body": null}') as varchar)
    end as raw
from parsed
