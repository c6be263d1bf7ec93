-- batches rows from a chunk of JSON lines (relation `notifsync_arrow_chunk`), as
-- connector/marketplace/records.py `batch_rows` builds them one at a time. The line itself
-- (raw) is not selected: connector/warehouse/json_lines.py `flatten` attaches it, in order.
with parsed as (
    select
        raw,
        json_transform(
            raw,
            '{"id": "VARCHAR", "subject": "VARCHAR",
              "category": {"id": "VARCHAR", "name": "VARCHAR"},
              "account": {"id": "VARCHAR", "name": "VARCHAR"},
              "attachments": ["JSON"],
              "audit": {"created": {"at": "VARCHAR"}, "updated": {"at": "VARCHAR"}}}'
        ) as r
    from notifsync_arrow_chunk
)
select
    r.id as id,
    r.subject as subject,
    r.category.id as category_id,
    r.category.name as category_name,
    r.account.id as account_id,
    r.account.name as account_name,
    coalesce(len(r.attachments), 0) as attachment_count,
    cast(r.audit.created.at as timestamptz) as created_at,
    cast(r.audit.updated.at as timestamptz) as updated_at,
    md5(raw) as row_hash
from parsed
