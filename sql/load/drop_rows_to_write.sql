drop table if exists {stage}_write
