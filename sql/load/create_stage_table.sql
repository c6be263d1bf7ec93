-- An empty table with the target's columns, in the order the DDL lists them (a column added
-- to an older table sits last in the table itself), for this load's rows.
create temporary table {stage} as select {columns} from {target} where 1 = 0
