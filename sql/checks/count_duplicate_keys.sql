-- Key values that occur more than once.
select count(*) from (
    select {columns} from {target} group by {columns} having count(*) > 1
) as duplicates
