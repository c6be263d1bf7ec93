-- What a certified (EviNotice) campaign's plan row adds to campaign_plan: the recipient's
-- legal name and the template variables from the audience's extra columns. Replaced with the
-- campaign's plan.
create table if not exists campaign_plan_variables (
    campaign text not null, -- Campaign name (campaigns.name)
    audience_row bigint not null, -- campaign_plan.audience_row
    legal_name text, -- Legal name from the audience (optional)
    variables json -- Template variables filling the body's {{Variable}} placeholders
);
