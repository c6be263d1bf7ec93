-- The run's own row, or else the latest run (a plan re-made without reading exports again).
select run_id, export_key
from reconciliation_runs
order by case when run_id = :run_id then 0 else 1 end, started_at desc
limit 1
