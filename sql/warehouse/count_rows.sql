select count(*) from {target}
