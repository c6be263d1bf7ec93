-- After a full read: rows the API no longer returns get deleted_at, never a delete. The
-- hash is cleared so that a row coming back is rewritten, with deleted_at null again.
update {target}
set deleted_at = :now, row_hash = null, synced_at = :now
where deleted_at is null
  and not exists (select 1 from {stage} as s where s.{key} = {target}.{key})
