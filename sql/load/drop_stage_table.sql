drop table if exists {stage}
