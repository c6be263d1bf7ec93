-- An audience given as the name of a table or view (checked as [schema.]name by the campaign
-- model) is every row of it.
select * from {table}
