select count(*) from {target} where {column} is null
