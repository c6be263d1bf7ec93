drop table if exists {stage}_read
