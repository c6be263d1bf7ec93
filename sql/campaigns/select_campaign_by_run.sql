-- The campaign a run planned (the send step of the same run sends it).
select name, definition, source from campaigns where run_id = :run_id order by planned_at desc
