-- An action this apply claimed for the first time but never sent (it stopped first): the claim
-- is taken back, so the next apply sees it as never tried rather than as perhaps sent.
delete from pushback_results
where action_key = :action_key and claim = :claim and state = 'sending'
