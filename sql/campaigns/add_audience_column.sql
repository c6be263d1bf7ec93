-- A recipient column the audience did not return (contact_id, email or name), as nulls.
alter table campaign_audience_rows add column {column} text
