select * from campaign_audience_rows where 1 = 0
