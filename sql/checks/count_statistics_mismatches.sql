-- Snapshot rows whose total is not the sum of its parts.
select count(*)
from category_statistics_snapshots
where snapshot_at = :snapshot_at
  and total <> sent + bounced + complained + discarded + failed
