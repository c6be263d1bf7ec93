-- A readable sample of the plan: the first actions of each kind.
select action, email, contact_id, name, reason, source_file, line
from (
    select
        p.*,
        row_number() over (partition by action order by email) as position
    from reconciliation_plan as p
) as ranked
where position <= :per_action
order by action, email
