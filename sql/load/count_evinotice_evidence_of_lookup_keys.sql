-- Evidence rows of the given lookup keys (what one evidence sync covered).
select count(*) from evinotice_evidence where lookup_key in :keys
