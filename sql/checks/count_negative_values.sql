-- Rows where a count is negative.
select count(*) from {target} where {column} < 0
