-- PostgreSQL: a session lock named after the work it guards; false when another holds it.
select pg_try_advisory_lock(hashtext(:name))
