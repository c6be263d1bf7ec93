-- Child rows (e.g. opt-outs) follow their parent: rewritten exactly when the parent is.
delete from {child} where {child_key} in (select {key} from {stage}_write);
insert into {child}
select c.* from {child_stage} as c
where c.{child_key} in (select {key} from {stage}_write)
