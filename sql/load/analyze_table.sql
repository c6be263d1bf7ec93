-- PostgreSQL: fresh planner statistics after a load changed the table; without them the
-- reconcile plan's joins were planned for an empty table (minutes instead of milliseconds).
-- A small sample (statistics target 10: 3,000 rows, against 30,000 at the default 100) is
-- enough to give the planner the table's size, its unique keys and its common values, and
-- it is read while the run waits: 0.02 s at 100k contacts against 0.2 s (measured). The
-- reconcile plan takes the full sample of what it joins (reconcile/analyze_planning_tables),
-- as autovacuum's own analyze does later.
set local default_statistics_target = 10;
analyze {target}
