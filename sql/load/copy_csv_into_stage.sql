-- PostgreSQL bulk path for columns built in bulk: Arrow writes them as CSV (every string
-- quoted, nulls unquoted and empty), COPY reads them.
copy {stage} ({columns}) from stdin (format csv)
