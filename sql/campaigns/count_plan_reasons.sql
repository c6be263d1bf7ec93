-- The plan's rows by outcome: 'included', or the reason they were excluded.
select coalesce(reason, 'included') as reason, count(*) as audience_rows
from campaign_plan
where campaign = :campaign
group by coalesce(reason, 'included')
order by 1
