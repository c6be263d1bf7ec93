drop table if exists {read}
