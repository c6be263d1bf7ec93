delete from sync_state where name = :name;
insert into sync_state (name, value, updated_at) values (:name, :value, :now)
