insert into pushback_results (
    action_key, run_id, action, email, contact_id, state, attempts,
    first_attempt_at, last_attempt_at
)
select
    cast(:action_key as text), cast(:run_id as text), cast(:action as text),
    cast(:email as text), cast(:contact_id as text), 'sending', cast(:attempts as bigint),
    cast(:now as timestamptz), cast(:now as timestamptz)
where not exists (select 1 from pushback_results where action_key = :action_key)
