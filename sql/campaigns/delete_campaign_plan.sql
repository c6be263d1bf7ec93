delete from campaign_plan where campaign = :campaign
