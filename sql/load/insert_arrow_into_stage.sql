-- DuckDB bulk path: an Arrow table's rows into the stage table. `notifsync_arrow_rows` is
-- the Arrow table itself, found by its Python name (connector/warehouse/staging.py
-- `Stage.write_arrow`).
insert into {stage} ({columns}) select {columns} from notifsync_arrow_rows
