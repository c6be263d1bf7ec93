insert into {target}
select s.* from {stage} as s
where s.{key} in (select {key} from {stage}_write)
