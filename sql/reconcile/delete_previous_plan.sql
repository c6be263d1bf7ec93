-- A new plan replaces the previous one (the ledger keeps what was applied).
delete from reconciliation_plan;
delete from platform_contacts_missing_from_crm;
delete from crm_conflicts
