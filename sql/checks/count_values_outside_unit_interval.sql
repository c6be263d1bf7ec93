-- Rows whose rate (a share of a total) lies outside [0, 1].
select count(*) from {target} where {column} < 0 or {column} > 1
