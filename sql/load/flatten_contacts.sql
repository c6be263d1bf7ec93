-- Contacts rows from a chunk of JSON lines (relation `notifsync_arrow_chunk`, one source record per row in
-- `raw`), parsed once each, flattened, typed and hashed in bulk: the columns
-- connector/marketplace/records.py `contact_rows` builds one record at a time.
-- email_key is filled here for plain ASCII addresses (the pattern of
-- PLAIN_EMAIL of the connector's email rules, up to 64 characters: only case to fold); the few
-- others are left null for the Python normaliser. The opt-outs come along as a list, so
-- their rows are made without parsing the JSON again. The line itself (raw) is not selected:
-- connector/warehouse/json_lines.py `flatten` attaches it, one line per row, in order.
with parsed as (
    select
        raw,
        json_transform(
            raw,
            '{"id": "VARCHAR", "email": "VARCHAR", "name": "VARCHAR", "status": "VARCHAR",
              "blockedReason": "VARCHAR", "user": {"id": "VARCHAR", "name": "VARCHAR"},
              "optOuts": [{"id": "VARCHAR", "name": "VARCHAR"}],
              "audit": {"created": {"at": "VARCHAR"}, "updated": {"at": "VARCHAR"}}}'
        ) as r
    from notifsync_arrow_chunk
)
select
    r.id as id,
    r.email as email,
    case
        -- strlen (bytes) rather than length (characters, read as UTF-8): the pattern takes
        -- ASCII only, where the two agree, and it is the cheaper test.
        when strlen(r.email) <= 64
            and regexp_full_match(
                r.email,
                '[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,63}'
            )
            then lower(r.email)
    end as email_key,
    r.name as name,
    r.status as status,
    r.blockedReason as blocked_reason,
    r.user.id as user_id,
    r.user.name as user_name,
    coalesce(len(r.optOuts), 0) as opt_out_count,
    cast(r.audit.created.at as timestamptz) as created_at,
    cast(r.audit.updated.at as timestamptz) as updated_at,
    md5(raw) as row_hash,
    r.optOuts as opt_outs -- not a column of contacts: flatten_contact_opt_outs reads it
from parsed
