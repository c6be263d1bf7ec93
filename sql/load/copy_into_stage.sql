-- PostgreSQL bulk path: rows stream into the stage table through COPY.
copy {stage} ({columns}) from stdin
