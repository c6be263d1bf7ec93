select recipient_key, contact_id, email
from campaign_batch_recipients
where batch_key = :batch_key
order by recipient_key
