-- Staged rows that are new or differ from what the table holds (by source-record hash).
create temporary table {stage}_write as
select s.{key} as {key}, t.{key} is not null as existed
from {stage} as s
left join {target} as t on t.{key} = s.{key}
where t.{key} is null or t.row_hash is distinct from s.row_hash
