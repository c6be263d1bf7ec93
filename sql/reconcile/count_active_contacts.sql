select count(*) from contacts where deleted_at is null and status = 'Active'
