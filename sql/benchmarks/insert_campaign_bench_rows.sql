-- Benchmark set-up (DuckDB): :rows platform contacts (2% blocked, 1% deleted), opt-outs of
-- the campaign's category for 2%, CRM flags for 1%, recent messages in the category for 5%,
-- and an audience table of :rows rows (mostly contact ids, some emails, a few duplicates).
insert into contacts (id, email, email_key, name, status, deleted_at, synced_at)
select
    'CTT-' || lpad(cast(i as text), 12, '0'),
    'person.' || cast(i as text) || '@example.com',
    'person.' || cast(i as text) || '@example.com',
    'Person ' || cast(i as text),
    case when i % 50 = 0 then 'Blocked' else 'Active' end,
    case when i % 100 = 1 then now() end,
    now()
from range(cast(:rows as bigint)) as t(i);

insert into contact_opt_outs (contact_id, category_id)
select 'CTT-' || lpad(cast(i as text), 12, '0'), :category_id
from range(cast(:rows as bigint)) as t(i)
where i % 50 = 3;

insert into crm_contacts (run_id, source_file, line, email, do_not_email, mailable)
select 'bench', 'crm.csv', i, 'person.' || cast(i as text) || '@example.com', true, false
from range(cast(:rows as bigint)) as t(i)
where i % 100 = 5;

insert into messages (id, contact_id, category_id, status, created_at)
select
    'MSG-' || lpad(cast(i as text), 16, '0'),
    'CTT-' || lpad(cast(i as text), 12, '0'),
    :category_id,
    'Sent',
    now() - interval '1 day'
from range(cast(:rows as bigint)) as t(i)
where i % 20 = 7;

create table bench_audience as
select
    case when i % 10 = 9 then null else 'CTT-' || lpad(cast(i as text), 12, '0') end
        as contact_id,
    case when i % 10 = 9 then 'Person.' || cast(i as text) || '@Example.com' end as email,
    'Person ' || cast(i as text) as name
from range(cast(:rows as bigint)) as t(i)
union all
select 'CTT-' || lpad(cast(i as text), 12, '0'), null, null
from range(cast(:rows as bigint) // 1000) as t(i)
