-- Per-recipient evidence of EviNotice certified mail, merged on id; lookup_key joins each record back to the row its recipient came from.
create table if not exists evinotice_evidence (
    id text not null primary key, -- Evidence id
    linked_id text, -- LinkedId: groups the sendings of one request (the batch)
    lookup_key text, -- The recipient's LookupKey, as the batch was given it
    recipient_address text, -- Email address or phone number
    state text, -- Submitted, Processed, Sent, Dispatched, Delivered, Read, Replied, Closed, Failed, or as it comes
    outcome text, -- None, Certified, Sent, Delivered, Read, Accepted, Rejected, Failed, Cancelled, Refused, or as it comes
    created_at timestamptz, -- CreationDate
    last_update_date timestamptz, -- LastUpdateDate: the last state change
    time_to_live_minutes bigint, -- TimeToLive: minutes the evidence stays open to the recipient
    synced_at timestamptz, -- When this row was last written
    row_hash text, -- Hash of the source record
    raw json -- The whole source record
);
