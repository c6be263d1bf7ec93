-- Before a full refresh marks rows deleted: how many live rows the read did not return.
select count(*) from {target}
where deleted_at is null
  and not exists (select 1 from {stage} as s where s.{key} = {target}.{key})
