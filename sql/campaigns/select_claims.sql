select batch_key from campaign_results where claim = :claim and state = 'sending'
