-- contact_opt_outs rows from a chunk of flattened contacts (relation `chunk`: id and the
-- opt_outs list flatten_contacts.sql keeps): one per contact and category id, the first
-- entry's name when a category repeats, entries without an id left out (as
-- connector/marketplace/records.py `contact_rows` does).
with entries as (
    select id as contact_id, unnest(opt_outs) as entry, generate_subscripts(opt_outs, 1) as position
    from chunk
)
select contact_id, entry.id as category_id, arg_min(entry.name, position) as category_name
from entries
where entry.id is not null and entry.id <> ''
group by contact_id, entry.id
