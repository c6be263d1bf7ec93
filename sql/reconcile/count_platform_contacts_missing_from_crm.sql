select count(*) from platform_contacts_missing_from_crm
