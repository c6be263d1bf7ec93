-- The API's rolling delivery statistics per category, appended on every run: the API only
-- gives today / this week / this month, so history exists only because these are kept.
create table if not exists category_statistics_snapshots (
    snapshot_at timestamptz not null, -- When the statistics were read
    category_id text not null, -- Category (categories.id)
    statistics_window text not null, -- today, week or month (calendar windows in UTC)
    sent bigint, -- Messages sent in the window
    bounced bigint, -- Messages bounced
    complained bigint, -- Messages marked as spam by the recipient
    discarded bigint, -- Messages discarded (e.g. blocked contact)
    failed bigint, -- Messages that failed to send
    total bigint, -- The API's total for the window (should equal the sum of the parts)
    primary key (snapshot_at, category_id, statistics_window)
);
