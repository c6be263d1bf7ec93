-- A reporting table's rows from its model (sql/reporting/<table>.sql, comments removed),
-- matched by column name so the order of the model's columns does not matter. Runs after
-- delete_all_rows in the same transaction.
insert into {target} ({columns})
select {columns} from (
{model}
) as model
