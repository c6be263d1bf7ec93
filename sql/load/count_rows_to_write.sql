select
    count(*) as written,
    coalesce(sum(case when existed then 1 else 0 end), 0) as updated
from {stage}_write
