select action, count(*) as actions from reconciliation_plan group by action
