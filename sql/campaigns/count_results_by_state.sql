select state, count(*) as batches, sum(recipients) as recipients
from campaign_results
where campaign = :campaign
group by state
order by state
