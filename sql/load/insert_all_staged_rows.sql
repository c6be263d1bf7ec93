insert into {target} select * from {stage}
