-- The columns a table has now, to add those a newer DDL defines.
select column_name
from information_schema.columns
where table_name = :table_name
