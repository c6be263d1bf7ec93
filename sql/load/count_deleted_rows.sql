select count(*) from {target} where deleted_at is not null
