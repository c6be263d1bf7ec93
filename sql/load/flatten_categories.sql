-- categories rows from a chunk of JSON lines (relation `notifsync_arrow_chunk`), as
-- connector/marketplace/records.py `category_rows` builds them one at a time. The line itself
-- (raw) is not selected: connector/warehouse/json_lines.py `flatten` attaches it, in order.
with parsed as (
    select
        raw,
        json_transform(
            raw,
            '{"id": "VARCHAR", "name": "VARCHAR", "shortDescription": "VARCHAR",
              "description": "VARCHAR", "status": "VARCHAR", "optOutAllowed": "BOOLEAN",
              "audit": {"created": {"at": "VARCHAR"}, "updated": {"at": "VARCHAR"}}}'
        ) as r
    from notifsync_arrow_chunk
)
select
    r.id as id,
    r.name as name,
    r.shortDescription as short_description,
    r.description as description,
    r.status as status,
    r.optOutAllowed as opt_out_allowed,
    cast(r.audit.created.at as timestamptz) as created_at,
    cast(r.audit.updated.at as timestamptz) as updated_at,
    md5(raw) as row_hash
from parsed
