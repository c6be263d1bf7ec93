-- An empty copy of the target table's columns, for this load's rows.
create temporary table {stage} as select * from {target} where 1 = 0
