-- contact_opt_outs rows from a chunk of contacts as JSON lines (relation `lines`): one per
-- contact and category id, the first entry's name when a category repeats, entries without
-- an id left out (as connector/marketplace/records.py `contact_rows` does).
with parsed as (
    select json_transform(raw, '{"id": "VARCHAR", "optOuts": [{"id": "VARCHAR", "name": "VARCHAR"}]}') as r
    from lines
),
entries as (
    select r.id as contact_id, unnest(r.optOuts) as entry, generate_subscripts(r.optOuts, 1) as position
    from parsed
)
select contact_id, entry.id as category_id, arg_min(entry.name, position) as category_name
from entries
where entry.id is not null and entry.id <> ''
group by contact_id, entry.id
