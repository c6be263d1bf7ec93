-- The campaign's audience, as the user's query or table returns it. {query} is the campaign
-- file's audience, placed on the first line so the warehouse's line numbers are the query's.
create temporary table campaign_audience_rows as {query}
