-- Delivery figures per category and UTC day, turned from the API's rolling statistics windows
-- (category_statistics_snapshots) into daily figures, and cross-checked against the synced
-- messages of the same category and day. Rebuilt as a whole after each sync.
create table if not exists category_deliverability_daily (
    day date not null, -- UTC calendar day the messages were created on
    category_id text not null, -- Category (categories.id)
    category_name text, -- Category name; null when the API no longer returns the category
    sent bigint, -- Messages sent, from the statistics snapshots; null when no snapshot covers the day
    bounced bigint, -- Messages bounced, from the statistics snapshots
    complained bigint, -- Messages marked as spam by the recipient, from the statistics snapshots
    discarded bigint, -- Messages discarded (e.g. blocked contact), from the statistics snapshots
    failed bigint, -- Messages that failed to send, from the statistics snapshots
    total bigint, -- The API's total: sent + bounced + complained + discarded + failed (queued messages are not counted)
    bounce_rate double precision, -- bounced / total; null when total is 0 or unknown
    complaint_rate double precision, -- complained / total; null when total is 0 or unknown
    method text, -- How the figures were derived: week_difference or month_difference (whole day), today_window (up to covered_until)
    covered_until timestamptz, -- The figures count the messages created from the day's start up to this time
    is_complete boolean, -- True when the figures cover the whole day (covered_until is the next midnight)
    messages_sent bigint, -- Cross-check: synced messages of the category created that day up to covered_until with status Sent; null when no message of that day is synced
    messages_bounced bigint, -- Cross-check: synced messages with status Bounced
    messages_complained bigint, -- Cross-check: synced messages with status Complained
    messages_discarded bigint, -- Cross-check: synced messages with status Discarded
    messages_failed bigint, -- Cross-check: synced messages with status Failed
    messages_queued bigint, -- Cross-check: synced messages still Queued (the API's statistics leave them out)
    messages_total bigint, -- Cross-check: the five statuses above Queued, comparable with total
    total_difference bigint, -- total - messages_total; null when either is unknown
    matches_messages boolean, -- total = messages_total; null when either is unknown
    primary key (day, category_id)
);
