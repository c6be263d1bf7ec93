select count(*) from reconciliation_plan
