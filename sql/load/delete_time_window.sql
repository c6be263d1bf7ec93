-- One partition (or a range of them): the rows created in [start, end).
delete from {target} where {time_column} >= :start and {time_column} < :end
