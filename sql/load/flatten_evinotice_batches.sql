-- evinotice_batches rows from a chunk of JSON lines (relation `chunk`, one batch of the list
-- shape per row in `raw`), as connector/evinotice/records.py `evinotice_batch_rows` builds
-- them one at a time. The client has already put the vendor's spellings under their usual
-- names and sorted each record's keys, so `raw` is the text the row builder keeps.
--
-- Timestamps: a string of the plain shape `date T time [.fraction] [Z | +hh:mm]` (the
-- service's, seven fractional digits and an offset) is read here: the fraction cut to
-- microseconds, no offset meaning UTC. Any other non-empty string (another ISO 8601 form
-- Python reads, or junk) is handed on in `<column>_text` for records.py `with_utc_timestamps`;
-- a value that is not a string is no timestamp.
--
-- Counts: JSON integers as they come; other numbers cut to integers, as Arrow stages the row
-- builder's; anything else null (raw keeps it). Progress follows records.py `_progress`.
with parsed as (
    select
        raw,
        json_transform(
            raw,
            '{"Id": "VARCHAR", "State": "VARCHAR", "Description": "VARCHAR",
              "SiteId": "VARCHAR", "SiteName": "VARCHAR", "Submitter": "VARCHAR",
              "TotalCount": "JSON", "TotalSent": "JSON", "TotalFailed": "JSON",
              "CreationDate": "JSON", "ScheduledFor": "JSON", "StartedOn": "JSON",
              "ProcessedOn": "JSON"}'
        ) as r
    from chunk
),

typed as (
    select
        raw,
        r,
        -- [TotalCount, TotalSent, TotalFailed] as stored, and as numbers for the progress
        list_transform(
            [r.TotalCount, r.TotalSent, r.TotalFailed],
            lambda j: case
                when json_type(j) in ('BIGINT', 'UBIGINT') then try_cast(j as bigint)
                when json_type(j) = 'DOUBLE' then try_cast(trunc(cast(j as double)) as bigint)
            end
        ) as counts,
        list_transform(
            [r.TotalCount, r.TotalSent, r.TotalFailed],
            lambda j: case when json_type(j) in ('BIGINT', 'UBIGINT', 'DOUBLE') then cast(j as double) end
        ) as numbers,
        json_type(r.TotalCount) in ('BIGINT', 'UBIGINT') as total_is_integer,
        -- [CreationDate, ScheduledFor, StartedOn, ProcessedOn], the strings among them
        list_transform(
            [r.CreationDate, r.ScheduledFor, r.StartedOn, r.ProcessedOn],
            lambda j: case when json_type(j) = 'VARCHAR' then json_extract_string(j, '$') end
        ) as stamps
    from parsed
),

timed as (
    select
        *,
        list_transform(
            stamps,
            lambda s: case
                when regexp_full_match(
                    s,
                    '[12]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?'
                )
                    then try_cast(
                        s || case when regexp_matches(s, '(Z|[+-]\d\d:\d\d)$') then '' else '+00:00' end
                        as timestamptz
                    )
            end
        ) as moments,
        coalesce(numbers[2], 0) + coalesce(numbers[3], 0) as done
    from typed
),

final as (
    select
        r.Id as id,
        r.State as state,
        r.Description as description,
        r.SiteId as site_id,
        r.SiteName as site_name,
        r.Submitter as submitter,
        counts[1] as total_count,
        counts[2] as sent_count,
        counts[3] as failed_count,
        case
            -- records.FINISHED_STATES
            when r.State in ('Processed', 'Sent', 'Completed') then 100.0
            when not coalesce(total_is_integer, false) or numbers[1] <= 0
                then case when numbers[1] = 0 then 0.0 end
            else floor(least(done, numbers[1]) * 10000 / numbers[1]) / 100
        end as progress_percentage,
        moments[1] as created_at,
        moments[2] as scheduled_for,
        moments[3] as started_on,
        moments[4] as processed_on,
        md5(raw) as row_hash,
        raw,
        -- not columns of evinotice_batches: the strings left for Python
        case when stamps[1] <> '' and moments[1] is null then stamps[1] end as created_at_text,
        case when stamps[2] <> '' and moments[2] is null then stamps[2] end as scheduled_for_text,
        case when stamps[3] <> '' and moments[3] is null then stamps[3] end as started_on_text,
        case when stamps[4] <> '' and moments[4] is null then stamps[4] end as processed_on_text
    from timed
)

select * from final
