-- DuckDB's memory cap for the whole instance (every connection of this process to the
-- warehouse file): lowered while a sync loads, put back after (connector/warehouse/engine.py
-- ``Warehouse.load``).
set memory_limit = :limit
