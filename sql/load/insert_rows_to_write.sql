insert into {target} ({columns})
select {columns} from {stage}
where {key} in (select {key} from {stage}_write)
