select count(*) from {target} where {column} is not null and {column} not in :accepted
