-- The latest reconciliation run's row, for the demo's summary.
select *
from reconciliation_runs
order by started_at desc
limit 1
