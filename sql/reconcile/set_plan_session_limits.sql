-- PostgreSQL only, for the planning transaction: a plan whose process was killed must not
-- keep running (and holding its locks) for the next run. The server checks every few
-- seconds that the client is still there and cancels the statement if not; a statement
-- timeout bounds a runaway plan, and a lock timeout makes a run that finds the tables still
-- locked fail with a clear error instead of waiting without end.
set local client_connection_check_interval = '2s';
set local statement_timeout = '30min';
set local lock_timeout = '60s'
