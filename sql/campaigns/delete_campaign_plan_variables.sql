delete from campaign_plan_variables where campaign = :campaign
