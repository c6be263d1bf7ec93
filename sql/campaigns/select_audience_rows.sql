-- Every row the audience returned, in the order it returned them.
select * from campaign_audience_rows
