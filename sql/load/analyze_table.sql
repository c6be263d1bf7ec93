-- PostgreSQL: fresh planner statistics after a load changed the table; without them the
-- reconcile plan's joins were planned for an empty table (minutes instead of milliseconds).
analyze {target}
