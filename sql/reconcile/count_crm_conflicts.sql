select count(*) from crm_conflicts
