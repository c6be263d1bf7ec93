-- Child rows the rewrite of their parents will remove and write.
select
    (select count(*) from {child} where {child_key} in (select {key} from {stage}_write)) as removed,
    (select count(*) from {child_stage} where {child_key} in (select {key} from {stage}_write))
        as written
