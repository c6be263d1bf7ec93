select count(distinct batch_key) from campaign_plan where campaign = :campaign and included
