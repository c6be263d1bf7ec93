-- Where a campaign's send stands; a cancelled version stays cancelled.
update campaigns
set
    status = case when cancelled_content_key = content_key then 'cancelled' else :status end,
    send_started_at = coalesce(send_started_at, cast(:send_started_at as timestamptz)),
    send_finished_at = coalesce(cast(:send_finished_at as timestamptz), send_finished_at)
where name = :name and content_key = :content_key
