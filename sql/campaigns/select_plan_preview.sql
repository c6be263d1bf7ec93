-- A readable sample of the plan: the first recipients, and the first rows of each exclusion.
select coalesce(reason, 'included') as reason, contact_id, email, name, batch_number
from (
    select
        p.*,
        row_number() over (partition by coalesce(reason, 'included') order by audience_row)
            as position
    from campaign_plan as p
    where campaign = :campaign
) as ranked
where position <= :per_reason
order by case when reason is null then 0 else 1 end, reason, audience_row
