-- Rows in one table (for metadata and summaries).
select count(*) from {target}
