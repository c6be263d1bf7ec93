-- evinotice_batches rows from a chunk of JSON lines (relation `notifsync_arrow_chunk`, one batch of the list
-- shape per row in `raw`), as connector/evinotice/records.py `evinotice_batch_rows` builds
-- them one at a time. The client has already put the vendor's spellings under their usual
-- names and sorted each record's keys, so `raw` is the text the row builder keeps; it is not
-- selected here (connector/warehouse/json_lines.py `flatten` attaches it, in order).
--
-- Timestamps: a string of the plain shape `date T time [.fraction] (Z | +hh:mm)` (the
-- service's: seven fractional digits and an offset) is read here, the fraction cut to
-- microseconds. The pattern is strict because DuckDB also reads hour 24 and offsets past
-- 23:59, which Python refuses. A row with any other non-empty timestamp (no offset, another
-- ISO 8601 form Python reads, or junk) is marked `odd_timestamps`: records.py
-- `with_utc_timestamps` reads those few in Python.
--
-- Counts: JSON numbers, cut to integers as Arrow stages the row builder's. Sent and failed are
-- read as doubles, exact below 2^53 (a batch holds at most 100,000 recipients); a value the
-- row builder cannot stage at all (text, true) becomes what DuckDB reads in it, or null; raw
-- keeps it either way. The progress follows records.py `_progress`.
with parsed as (
    select
        raw,
        json_transform(
            raw,
            '{"Id": "VARCHAR", "State": "VARCHAR", "Description": "VARCHAR",
              "SiteId": "VARCHAR", "SiteName": "VARCHAR", "Submitter": "VARCHAR",
              "TotalCount": "JSON", "TotalSent": "DOUBLE", "TotalFailed": "DOUBLE",
              "CreationDate": "VARCHAR", "ScheduledFor": "VARCHAR", "StartedOn": "VARCHAR",
              "ProcessedOn": "VARCHAR"}'
        ) as r
    from notifsync_arrow_chunk
),

typed as (
    select
        raw,
        r,
        json_type(r.TotalCount) as total_type,
        -- The number's own text, cast: cheaper than casting the JSON value.
        case
            when total_type in ('BIGINT', 'UBIGINT', 'DOUBLE')
                then cast(cast(r.TotalCount as varchar) as double)
        end as total,
        case
            when regexp_full_match(
                r.CreationDate,
                '[12]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)'
            )
                then try_cast(r.CreationDate as timestamptz)
        end as created_at,
        case
            when regexp_full_match(
                r.ScheduledFor,
                '[12]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)'
            )
                then try_cast(r.ScheduledFor as timestamptz)
        end as scheduled_for,
        case
            when regexp_full_match(
                r.StartedOn,
                '[12]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)'
            )
                then try_cast(r.StartedOn as timestamptz)
        end as started_on,
        case
            when regexp_full_match(
                r.ProcessedOn,
                '[12]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)'
            )
                then try_cast(r.ProcessedOn as timestamptz)
        end as processed_on
    from parsed
),

final as (
    select
        r.Id as id,
        r.State as state,
        r.Description as description,
        r.SiteId as site_id,
        r.SiteName as site_name,
        r.Submitter as submitter,
        case total_type
            when 'BIGINT' then cast(cast(r.TotalCount as varchar) as bigint)
            when 'UBIGINT' then try_cast(cast(r.TotalCount as varchar) as bigint)
            when 'DOUBLE' then try_cast(trunc(total) as bigint)
        end as total_count,
        try_cast(trunc(r.TotalSent) as bigint) as sent_count,
        try_cast(trunc(r.TotalFailed) as bigint) as failed_count,
        case
            -- records.FINISHED_STATES
            when r.State in ('Processed', 'Sent', 'Completed') then 100.0
            when total_type not in ('BIGINT', 'UBIGINT') or total_type is null or total <= 0
                then case when total = 0 then 0.0 end
            else floor(least(coalesce(r.TotalSent, 0) + coalesce(r.TotalFailed, 0), total) * 10000 / total) / 100
        end as progress_percentage,
        created_at,
        scheduled_for,
        started_on,
        processed_on,
        md5(raw) as row_hash,
        -- not a column of evinotice_batches: the rows whose timestamps Python reads
        coalesce(
            (r.CreationDate <> '' and created_at is null)
            or (r.ScheduledFor <> '' and scheduled_for is null)
            or (r.StartedOn <> '' and started_on is null)
            or (r.ProcessedOn <> '' and processed_on is null),
            false
        ) as odd_timestamps
    from typed
)

select * from final
