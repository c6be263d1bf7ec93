select action_key from pushback_results where claim = :claim and state = 'sending'
