-- contact_opt_outs rows from a chunk of flattened contacts (relation `notifsync_arrow_chunk`: id and the
-- opt_outs list flatten_contacts.sql keeps): one per contact and category id, the first
-- entry's name when a category repeats, entries without an id left out (as
-- connector/marketplace/records.py `contact_rows` does).
-- The repeats are dropped inside each list (an entry is kept where its id first appears):
-- no grouping over the chunk, whose set-up costs more than these few rows.
with entries as (
    select
        id as contact_id,
        unnest(
            list_filter(
                opt_outs,
                lambda entry, position: entry.id <> ''
                    and list_position(list_transform(opt_outs, lambda e: e.id), entry.id) = position
            )
        ) as entry
    from notifsync_arrow_chunk
)
select contact_id, entry.id as category_id, entry.name as category_name
from entries
