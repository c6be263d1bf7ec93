-- PostgreSQL only: fresh statistics for the tables the plan reads. Right after a load the
-- planner otherwise guesses from empty or stale statistics and picks nested loops over
-- every row (24 s at 2,000 contacts, over 300 s at 20,000; milliseconds after this).
analyze contacts;
analyze crm_contacts;
analyze pushback_results
