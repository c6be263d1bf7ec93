-- Rows beyond the first for each key: a load writes none of them, and on DuckDB no key index
-- would stop them (connector/warehouse/schema.py).
select count(*) - count(distinct {key}) from {stage}
