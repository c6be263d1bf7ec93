select value from sync_state where name = :name
