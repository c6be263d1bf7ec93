-- The guard verdict recorded for the run that made the current plan.
select r.run_id, r.guards_tripped, r.overrides
from reconciliation_runs as r
where r.run_id in (select run_id from reconciliation_plan)
