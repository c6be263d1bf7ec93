-- Batches whose counts do not add up to their total, or have a negative part.
select count(*)
from batch_statistics
where coalesce(sent_count, 0) + coalesce(failed_count, 0) + coalesce(bounced_count, 0)
      + coalesce(complained_count, 0) + coalesce(discarded_count, 0)
      + coalesce(pending_count, 0) <> total_count
   or sent_count < 0
   or failed_count < 0
   or pending_count < 0
