-- A column a newer DDL defines, added to a table created by an older version.
alter table {target} add column {column} {column_type}
