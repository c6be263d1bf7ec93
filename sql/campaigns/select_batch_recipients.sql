select batch_key, recipient_key, contact_id, email
from campaign_batch_recipients
where batch_key in :batch_keys
order by batch_key, recipient_key
