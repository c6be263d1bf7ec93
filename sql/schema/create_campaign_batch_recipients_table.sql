-- Who each claimed batch goes to, written with the claim: the ledger's memory of a chunk, so
-- a lookup can recognise the batch and a new plan knows who this campaign already reached.
create table if not exists campaign_batch_recipients (
    batch_key text not null, -- campaign_results.batch_key
    recipient_key text not null, -- contact id, or the email for a recipient sent by email
    campaign text, -- Campaign name
    contact_id text, -- Platform contact
    email text, -- Email address
    primary key (batch_key, recipient_key)
);
