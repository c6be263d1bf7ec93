drop table if exists campaign_audience_rows
