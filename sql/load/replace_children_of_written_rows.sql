-- Child rows (e.g. opt-outs) follow their parent: rewritten exactly when the parent is.
delete from {child} where {child_key} in (select {key} from {stage}_write);
insert into {child} ({child_columns})
select {child_columns} from {child_stage}
where {child_key} in (select {key} from {stage}_write)
