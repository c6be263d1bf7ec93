-- The keys of every row a streamed merge has read so far (its stage holds only the rows
-- since the last merge): what a full refresh compares the table with at the end.
create temporary table {read} as select {key} from {target} where 1 = 0
