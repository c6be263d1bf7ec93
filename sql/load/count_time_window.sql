-- Rows of one partition (or a range of them): created in [start, end).
select count(*) from {target} where {time_column} >= :start and {time_column} < :end
