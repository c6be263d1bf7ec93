-- The newest audit event (created or updated) among the contacts an incremental read staged:
-- the next incremental run starts from it, minus the look-back. A contact never updated has
-- no updated_at, so both columns are looked at.
select max(changed_at)
from (
    select created_at as changed_at from {stage}
    union all
    select updated_at as changed_at from {stage}
) as changes
