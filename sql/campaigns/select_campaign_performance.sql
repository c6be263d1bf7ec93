select * from campaign_performance where campaign = :campaign
