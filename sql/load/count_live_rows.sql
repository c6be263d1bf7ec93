-- Rows the API still returns (a full refresh sets deleted_at on the others).
select count(*) from {target} where deleted_at is null
