-- A stage whose rows are merged, ready for the next batch. Dropped and made again rather than
-- deleted from: DuckDB frees a dropped temporary table's memory, not deleted rows'.
drop table if exists {stage};
create temporary table {stage} as select {columns} from {target} where 1 = 0
