select * from campaigns where name = :name
