-- Whether a table holds any row at all (deleted-marked ones too), without counting them.
select exists (select 1 from {target})
