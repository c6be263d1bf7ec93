-- The current plan of each campaign: one row per audience row, included (with its batch) or
-- excluded with the reason. Replaced per campaign when it is planned again; (campaign,
-- audience_row) is unique by construction (no index: a million-row plan inserts faster).
create table if not exists campaign_plan (
    campaign text not null, -- Campaign name (campaigns.name)
    audience_row bigint not null, -- Position of the row in the audience's answer
    content_key text, -- Campaign version the plan was made for
    contact_id text, -- Platform contact (given, or matched by email)
    email text, -- Email the message goes to (the platform's, else the audience's)
    name text, -- Name from the audience
    included boolean, -- Will be sent
    reason text, -- Why excluded (null when included)
    batch_number bigint, -- Chunk of the audience the row is sent in (included rows)
    batch_key text, -- Stable key of that chunk in campaign_results
    planned_at timestamptz -- When the plan was made
);
