-- opt_outs_by_category: per category, the non-deleted contacts that opted out of it and their
-- share of all non-deleted contacts.
--
-- Every category the API returns has a row (0 when nobody opted out); a category only the
-- opt-outs still name (gone from the API) has one too, with the name recorded with them.

with

categories as (
    select
        id as category_id,
        name as category_name,
        status as category_status,
        opt_out_allowed
    from categories
),

contacts as (
    select id as contact_id
    from contacts
    where deleted_at is null
),

contact_opt_outs as (
    select
        contact_id,
        category_id,
        category_name
    from contact_opt_outs
),

opt_out_counts as (
    select
        opt_outs.category_id,
        count(*) as opted_out_contacts,
        max(opt_outs.category_name) as recorded_name
    from contact_opt_outs as opt_outs
    inner join contacts
        on contacts.contact_id = opt_outs.contact_id
    group by opt_outs.category_id
),

contact_count as (
    select count(*) as contacts from contacts
),

all_categories as (
    select category_id from categories
    union
    select category_id from opt_out_counts
),

final as (
    select
        all_categories.category_id,
        coalesce(categories.category_name, counted.recorded_name) as category_name,
        categories.category_status,
        categories.opt_out_allowed,
        coalesce(counted.opted_out_contacts, 0) as opted_out_contacts,
        contact_count.contacts,
        cast(coalesce(counted.opted_out_contacts, 0) as double precision)
            / nullif(contact_count.contacts, 0) as opt_out_share
    from all_categories
    left join categories
        on categories.category_id = all_categories.category_id
    left join opt_out_counts as counted
        on counted.category_id = all_categories.category_id
    cross join contact_count
)

select * from final
