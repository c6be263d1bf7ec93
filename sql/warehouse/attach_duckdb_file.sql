-- The warehouse's DuckDB file, attached to this process's DuckDB instance once (every
-- connection of the instance then sees it), read-only if the URL asks for it, with the row
-- group size a load writes in (connector/warehouse/engine.py DUCKDB_ROW_GROUP_ROWS): options
-- of the attachment, not stored in the file. DuckDB-native parameters ($path, $read_only,
-- $rows): this runs on the driver's connection as it opens.
attach if not exists $path as {alias} (read_only $read_only, row_group_size $rows)
