"""The EviNotice sandbox's batches in memory, with their progress and per-recipient evidence
derived from sandbox time.

The same seed and clock always give the same state: a submitted batch starts ``queue_delay``
seconds later (or at its ``ScheduledDate`` if that is later), then processes a fixed number of
recipients a second; a small deterministic share of recipients fails, and so does every address
whose local part starts with ``fail`` or ``bounce``. Each processed uploaded recipient has an
evidence record (``sandbox.evinotice.evidence``).
"""

from __future__ import annotations

import math
import random
import threading
import uuid
from bisect import bisect_right, insort
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.clock import SandboxClock
from sandbox.evinotice.data import (
    QUEUE_DELAY_SECONDS,
    SeedBatch,
    batch_parameters,
    generate_batches,
)
from sandbox.evinotice.evidence import OUTCOMES as EVIDENCE_OUTCOMES
from sandbox.evinotice.evidence import STATES as EVIDENCE_STATES
from sandbox.evinotice.evidence import Recipient as EvidenceRecipient
from sandbox.evinotice.evidence import evidence_record
from sandbox.evinotice.payloads import (
    CORE_FIELDS,
    DEFAULT_PAGE_SIZE,
    DEFAULT_SITE_ID,
    DEFAULT_SITE_NAME,
    MAX_PAGE_SIZE,
    MAX_RECIPIENTS_PER_BATCH,
    STATES,
    SandboxProblem,
    bad,
    decode_cursor,
    encode_cursor,
    fill_placeholders,
    parse_attachments,
    parse_recipients,
    parse_timestamp,
    recipient_fails,
    validate_options,
)


@dataclass
class _Batch:
    id: str
    site_id: str
    site_name: str
    submitter: str
    created: datetime
    updated: datetime
    description: str
    subject: str
    issuer_name: str
    body: str
    options: dict[str, Any]
    rate: float
    fail_permille: int
    synthetic_recipients: int = 0  # seeded batches: counted, not listed
    recipients: list[dict[str, Any]] = field(default_factory=list)
    fail_prefix: list[int] = field(default_factory=list)  # failures among the first i+1 uploaded
    attachments: list[dict[str, Any]] = field(default_factory=list)
    submitted_at: datetime | None = None
    scheduled_for: datetime | None = None

    @property
    def total(self) -> int:
        return self.synthetic_recipients + len(self.recipients)

    def failed_among(self, done: int) -> int:
        synthetic = min(done, self.synthetic_recipients)
        failed = synthetic * self.fail_permille // 1000
        uploaded = done - synthetic
        if uploaded > 0:
            failed += self.fail_prefix[uploaded - 1]
        return failed


@dataclass(frozen=True)
class _Progress:
    state: str
    started_on: datetime | None
    processed_on: datetime | None
    sent: int
    failed: int
    percentage: float
    last_update: datetime

    @property
    def outcome(self) -> str | None:
        if self.state != "Processed":
            return None
        if self.failed == 0:
            return "Completed"
        return "Failed" if self.sent == 0 else "CompletedWithErrors"


class EviNoticeStore:
    """Every EviNotice batch of the sandbox, in memory; progress follows the sandbox clock."""

    def __init__(
        self,
        clock: SandboxClock,
        *,
        seed: int = 1,
        batches: int = 50,
        site_id: str = DEFAULT_SITE_ID,
        site_name: str = DEFAULT_SITE_NAME,
        queue_delay: float = QUEUE_DELAY_SECONDS,
        vendor_spellings: bool = False,
    ) -> None:
        self.clock = clock
        # The vendor's pages spell two fields HashMoreResults and ProgessPercentage; a store
        # made with vendor_spellings answers with those, so clients are tested against both.
        self.vendor_spellings = vendor_spellings
        self.site_id = site_id
        self.site_name = site_name
        self.queue_delay = queue_delay
        # One lock for reads and writes: every operation is short and synchronous, so holding it
        # never blocks the event loop for long, and a threaded server stays consistent too.
        self._lock = threading.RLock()
        self.seed = seed
        # Counts writes, so derived views (the evidence index) know when to rebuild.
        self._writes = 0
        self._index: _EvidenceIndex | None = None
        self._ids = random.Random(f"evinotice-ids-{seed}")
        self._batches: dict[str, _Batch] = {}
        # Per site, (created, id) in ascending order: the order list positions count in.
        self._order: dict[str, list[tuple[datetime, str]]] = {}
        anchor = clock.now()
        for seeded in generate_batches(
            seed=seed, count=batches, anchor=anchor, site_id=site_id, site_name=site_name
        ):
            self._insert(_from_seed(seeded))

    def _spelling(self, name: str) -> str:
        if not self.vendor_spellings:
            return name
        return {"HasMoreResults": "HashMoreResults", "ProgressPercentage": "ProgessPercentage"}[
            name
        ]

    # -- writes --

    def create_batch(self, payload: Mapping[str, Any], *, submitter: str) -> str:
        """Create a Draft batch from the POST body; returns its id."""
        for name in ("ScheduledDate", "State"):
            if name in payload:
                raise bad(name, f"{name} is set with PATCH once the batch is configured.")
        validate_options(payload, allowed_extra=())
        missing = {
            name: ["Required."]
            for name in CORE_FIELDS
            if not isinstance(payload.get(name), str) or not payload[name].strip()
        }
        if missing:
            raise SandboxProblem(400, "One or more validation errors occurred.", missing)
        with self._lock:
            batch_id = str(uuid.UUID(int=self._ids.getrandbits(128), version=4))
            rate, fail_permille = batch_parameters(batch_id)
            now = self.clock.now()
            options = {k: v for k, v in payload.items() if k not in CORE_FIELDS and v is not None}
            self._insert(
                _Batch(
                    id=batch_id,
                    site_id=self.site_id,
                    site_name=self.site_name,
                    submitter=submitter,
                    created=now,
                    updated=now,
                    description=payload["Description"],
                    subject=payload["Subject"],
                    issuer_name=payload["IssuerName"],
                    body="",
                    options=options,
                    rate=rate,
                    fail_permille=fail_permille,
                )
            )
        return batch_id

    def set_body(self, batch_id: str, body: str) -> None:
        """Replace the message body of a Draft batch."""
        with self._lock:
            batch = self._editable(batch_id)
            batch.body = body
            batch.updated = self.clock.now()
            self._writes += 1

    def set_attachments(self, batch_id: str, files: Any) -> None:
        """Replace the attachments of a Draft batch (``[]`` clears them)."""
        attachments = parse_attachments(files)
        with self._lock:
            batch = self._editable(batch_id)
            batch.attachments = attachments
            batch.updated = self.clock.now()
            self._writes += 1

    def add_recipients(self, batch_id: str, text: str) -> int:
        """Append recipients from the ``|``-separated text to a Draft batch; returns how many."""
        rows = parse_recipients(text)
        with self._lock:
            batch = self._editable(batch_id)
            if batch.total + len(rows) > MAX_RECIPIENTS_PER_BATCH:
                raise bad(
                    "Recipients",
                    f"A batch holds at most {MAX_RECIPIENTS_PER_BATCH} recipients; it has "
                    f"{batch.total} and this request adds {len(rows)}.",
                )
            failed = batch.fail_prefix[-1] if batch.fail_prefix else 0
            for row in rows:
                failed += recipient_fails(batch.id, row["Address"], batch.fail_permille)
                batch.fail_prefix.append(failed)
            batch.recipients.extend(rows)
            batch.updated = self.clock.now()
            self._writes += 1
        return len(rows)

    def clear_recipients(self, batch_id: str) -> None:
        """Remove every recipient of a Draft batch."""
        with self._lock:
            batch = self._editable(batch_id)
            batch.recipients = []
            batch.fail_prefix = []
            batch.synthetic_recipients = 0
            batch.updated = self.clock.now()
            self._writes += 1

    def configure(self, batch_id: str, payload: Mapping[str, Any]) -> None:
        """Apply a PATCH: options, then ``State`` (``Draft`` reverts, ``Submitted`` finalises)."""
        validate_options(payload, allowed_extra=("State", "ScheduledDate"))
        state = payload.get("State")
        if "State" in payload and state not in ("Draft", "Submitted"):
            raise bad("State", "Must be Draft or Submitted.")
        scheduled: datetime | None = None
        if payload.get("ScheduledDate") is not None:
            if state == "Draft":
                raise bad("ScheduledDate", "State Draft cannot come with a ScheduledDate.")
            if state != "Submitted":
                raise bad("ScheduledDate", "ScheduledDate needs State Submitted.")
            scheduled = parse_timestamp(payload["ScheduledDate"], "ScheduledDate")
        options = {k: v for k, v in payload.items() if k not in ("State", "ScheduledDate")}
        with self._lock:
            batch = self._get(batch_id)
            now = self.clock.now()
            progress = self._progress(batch, now)
            started = progress.state in ("Processing", "Processed")
            changes = {k: v for k, v in options.items() if _current_option(batch, k) != v}
            for name in CORE_FIELDS:
                if name in changes and (not isinstance(changes[name], str) or not changes[name]):
                    raise bad(name, "Must not be empty.")
            # Decide everything before touching the batch, so a refused PATCH changes nothing.
            revert = state == "Draft" and progress.state != "Draft"
            if revert and started:
                # The PATCH answers only 200, 400 and 404: a refused revert is a 400.
                raise bad(
                    "State",
                    f"Batch {batch_id} is {progress.state}; it can no longer go back to Draft.",
                )
            draft_after = progress.state == "Draft" or revert
            if changes and not draft_after:
                raise SandboxProblem(
                    400,
                    f"Batch {batch_id} is {progress.state}; revert it to Draft to change "
                    f"{', '.join(sorted(changes))}.",
                    {name: ["Only a Draft batch can be changed."] for name in changes},
                )
            submit = False
            if state == "Submitted":
                if draft_after:
                    submit = True
                elif started:
                    if scheduled is not None and scheduled != batch.scheduled_for:
                        raise bad(
                            "ScheduledDate",
                            f"Batch {batch_id} is {progress.state}; it cannot be rescheduled.",
                        )
                elif scheduled != batch.scheduled_for:
                    submit = True  # not started yet: a new date (or none: send now) reschedules
            if submit:
                subject = changes.get("Subject", batch.subject)
                missing = {}
                if not batch.body.strip():
                    missing["Body"] = ["A batch needs a body before it is submitted."]
                if batch.total == 0:
                    missing["Recipients"] = ["A batch needs recipients before it is submitted."]
                if not subject:
                    missing["Subject"] = ["A batch needs a subject before it is submitted."]
                if missing:
                    raise SandboxProblem(400, "The batch is not ready to be submitted.", missing)
            # Apply.
            if revert:
                batch.submitted_at = None
                batch.scheduled_for = None
            for name, value in changes.items():
                if name == "Description":
                    batch.description = value
                elif name == "Subject":
                    batch.subject = value
                elif name == "IssuerName":
                    batch.issuer_name = value
                elif value is None:
                    batch.options.pop(name, None)
                else:
                    batch.options[name] = value
            if submit:
                batch.submitted_at = now
                batch.scheduled_for = scheduled
            if revert or changes or submit:
                batch.updated = now
                self._writes += 1

    # -- reads --

    def get_batch(
        self,
        batch_id: str,
        *,
        include_recipients_count: bool = False,
        include_attachments: bool = False,
    ) -> dict[str, Any]:
        """One batch as ``GET /v2/EviNotice/Batches/{id}`` answers it."""
        with self._lock:
            batch = self._get(batch_id)
            progress = self._progress(batch, self.clock.now())
            notice: dict[str, Any] = {
                "Subject": batch.subject,
                "Body": batch.body,
                "IssuerName": batch.issuer_name,
                **batch.options,
                "ScheduledDate": _ts(batch.scheduled_for),
            }
            if include_attachments:
                notice["Attachments"] = [dict(a) for a in batch.attachments]
            return {
                "Id": batch.id,
                "State": progress.state,
                "Description": batch.description,
                "CreationDate": _ts(batch.created),
                "LastUpdate": _ts(progress.last_update),
                "SentCount": progress.sent,
                "FailedCount": progress.failed,
                self._spelling("ProgressPercentage"): progress.percentage,
                "Outcome": progress.outcome,
                "TotalCount": batch.total if include_recipients_count else None,
                "Submitter": batch.submitter,
                "SiteId": batch.site_id,
                "SiteName": batch.site_name,
                "EviNotice": notice,
            }

    def query(
        self,
        *,
        owner_site_id: str,
        state: str | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        order: int = 0,
    ) -> dict[str, Any]:
        """One page of a site's batches, oldest first (``order=0``) or newest first (``1``).

        The cursor is a position in the ordered result, as the service's is: a batch created
        while a client pages newest first pushes every row one place down, so the next page
        repeats one. Clients deduplicate by ``Id``.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise bad("Limit", f"Must be between 1 and {MAX_PAGE_SIZE}.")
        if order not in (0, 1):
            raise bad("Order", "Must be 0 (ascending) or 1 (descending).")
        if state is not None and state not in STATES:
            raise bad("State", f"Must be one of {', '.join(STATES)}.")
        position = decode_cursor(cursor) if cursor else 0
        with self._lock:
            now = self.clock.now()
            keys = self._order.get(owner_site_id, [])
            ordered = keys if order == 0 else keys[::-1]
            rows = []
            for _, batch_id in ordered:
                batch = self._batches[batch_id]
                progress = self._progress(batch, now)
                if state is None or progress.state == state:
                    rows.append((batch, progress))
            page = [_summary(b, p) for b, p in rows[position : position + limit]]
        end = position + len(page)
        return {
            "Cursor": encode_cursor(end),
            self._spelling("HasMoreResults"): end < len(rows),
            "Results": page,
        }

    def query_evidence(
        self,
        *,
        limit: int = MAX_PAGE_SIZE,
        owner: str | None = None,
        lookup_keys: list[str] | None = None,
        state: str | None = None,
        outcome: str | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of evidence records, oldest first; the cursor is a position, as the
        batches list's. The answer has no "more" flag (none is documented): an empty page ends."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise bad("Limit", f"Must be between 1 and {MAX_PAGE_SIZE}.")
        if state is not None and state not in EVIDENCE_STATES:
            raise bad("State", f"Must be one of {', '.join(EVIDENCE_STATES)}.")
        if outcome is not None and outcome not in EVIDENCE_OUTCOMES:
            raise bad("Outcome", f"Must be one of {', '.join(EVIDENCE_OUTCOMES)}.")
        position = decode_cursor(cursor) if cursor else 0
        with self._lock:
            now = self.clock.now()
            chosen = self._processed(now, owner, lookup_keys)
            if state is None and outcome is None:
                # Records are built only for the page asked for.
                page = [self._evidence(p, now) for p in chosen[position : position + limit]]
            else:
                records = (self._evidence(p, now) for p in chosen)
                matching = [
                    record
                    for record in records
                    if (state is None or record["State"] == state)
                    and (outcome is None or record["Outcome"] == outcome)
                ]
                page = matching[position : position + limit]
        return {"Cursor": encode_cursor(position + len(page)), "Results": page}

    def evidence_snapshot(self) -> list[dict[str, Any]]:
        """Every evidence record as it stands now, oldest first (for tests and the control API)."""
        with self._lock:
            now = self.clock.now()
            return [self._evidence(p, now) for p in self._processed(now, None, None)]

    def _processed(self, now: datetime, owner: str | None, keys: list[str] | None) -> Sequence[int]:
        """Positions in the evidence index of the recipients processed by ``now``, in order."""
        index = self._evidence_index()
        end = bisect_right(index.entries, now, key=lambda entry: entry[0])
        positions: Sequence[int]
        if keys is None:
            positions = range(end)
        else:
            wanted = {p for key in set(keys) for p in index.by_key.get(key, ()) if p < end}
            positions = sorted(wanted)
        if owner is not None:
            positions = [
                p for p in positions if self._batches[index.entries[p][1]].submitter == owner
            ]
        return positions

    def _evidence(self, position: int, now: datetime) -> dict[str, Any]:
        processed_at, batch_id, number = self._evidence_index().entries[position]
        batch = self._batches[batch_id]
        row = batch.recipients[number]
        before = batch.fail_prefix[number - 1] if number else 0
        recipient = EvidenceRecipient(
            batch_id=batch_id,
            index=number,
            address=row["Address"],
            lookup_key=row["LookupKey"],
            processed_at=processed_at,
            failed=batch.fail_prefix[number] > before,
        )
        return evidence_record(self.seed, recipient, now, _ts)

    def _evidence_index(self) -> _EvidenceIndex:
        """Every uploaded recipient of a submitted batch with the moment it is (or will be)
        processed, in that order: the processed ones at ``now`` are a prefix. Rebuilt only
        after a write, so paging through evidence costs a page, not a rescan."""
        if self._index is not None and self._index.writes == self._writes:
            return self._index
        entries: list[tuple[datetime, str, int]] = []
        for batch in self._batches.values():
            if not batch.recipients or batch.submitted_at is None:
                continue
            start = self._start(batch)
            for number in range(len(batch.recipients)):
                # The batch's synthetic (seeded) recipients come first, then the uploaded ones.
                done = batch.synthetic_recipients + number + 1
                entries.append((start + timedelta(seconds=done / batch.rate), batch.id, number))
        entries.sort()
        by_key: dict[str, list[int]] = {}
        for position, (_, batch_id, number) in enumerate(entries):
            key = self._batches[batch_id].recipients[number]["LookupKey"]
            if key is not None:
                by_key.setdefault(key, []).append(position)
        self._index = _EvidenceIndex(self._writes, entries, by_key)
        return self._index

    def snapshot(self) -> list[dict[str, Any]]:
        """The true current state of every batch, oldest first (for tests and the control API)."""
        with self._lock:
            now = self.clock.now()
            rows = []
            for batch in sorted(self._batches.values(), key=lambda b: (b.created, b.id)):
                progress = self._progress(batch, now)
                rows.append(
                    {
                        **_summary(batch, progress),
                        "LastUpdate": _ts(progress.last_update),
                        "SentCount": progress.sent,
                        "FailedCount": progress.failed,
                        "ProgressPercentage": progress.percentage,
                        "Outcome": progress.outcome,
                        "Subject": batch.subject,
                        "Attachments": len(batch.attachments),
                    }
                )
            return rows

    def recipients(self, batch_id: str) -> list[dict[str, Any]]:
        """The recipients uploaded to a batch, as parsed (seeded batches only count theirs)."""
        with self._lock:
            return [dict(r) for r in self._get(batch_id).recipients]

    def bodies(self, batch_id: str) -> list[str]:
        """The body each uploaded recipient receives, placeholders filled, in upload order."""
        with self._lock:
            batch = self._get(batch_id)
            return [fill_placeholders(batch.body, r) for r in batch.recipients]

    # -- internals --

    def _insert(self, batch: _Batch) -> None:
        with self._lock:
            self._batches[batch.id] = batch
            insort(self._order.setdefault(batch.site_id, []), (batch.created, batch.id))

    def _get(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise SandboxProblem(404, f"Batch {batch_id} does not exist.")
        return batch

    def _editable(self, batch_id: str) -> _Batch:
        batch = self._get(batch_id)
        state = self._progress(batch, self.clock.now()).state
        if state != "Draft":
            raise SandboxProblem(
                409, f"Batch {batch_id} is {state}; only a Draft batch can be changed."
            )
        return batch

    def _start(self, batch: _Batch) -> datetime:
        """When a submitted batch starts: after the queue delay, or at its ScheduledDate."""
        assert batch.submitted_at is not None
        start = batch.submitted_at + timedelta(seconds=self.queue_delay)
        if batch.scheduled_for is not None and batch.scheduled_for > start:
            start = batch.scheduled_for
        return start

    def _progress(self, batch: _Batch, now: datetime) -> _Progress:
        if batch.submitted_at is None:
            return _Progress("Draft", None, None, 0, 0, 0.0, batch.updated)
        start = self._start(batch)
        if now < start:
            waiting = batch.scheduled_for is not None and now < batch.scheduled_for
            state = "Scheduled" if waiting else "Submitted"
            return _Progress(state, None, None, 0, 0, 0.0, batch.updated)
        total = batch.total
        duration = total / batch.rate
        elapsed = (now - start).total_seconds()
        if elapsed >= duration:
            done = total
            finished: datetime | None = start + timedelta(seconds=duration)
            percentage = 100.0
        else:
            # Never report every recipient done while the batch still says Processing.
            done = min(total - 1, int(elapsed * batch.rate))
            finished = None
            percentage = math.floor(done * 10_000 / total) / 100
        failed = batch.failed_among(done)
        return _Progress(
            "Processed" if finished else "Processing",
            start,
            finished,
            done - failed,
            failed,
            percentage,
            max(batch.updated, finished or now),
        )


@dataclass(frozen=True)
class _EvidenceIndex:
    writes: int  # the store's write count it was built at
    entries: list[tuple[datetime, str, int]]  # (processed at, batch id, recipient number)
    by_key: dict[str, list[int]]  # LookupKey -> positions in entries


@dataclass(frozen=True)
class _EvidenceIndex:
    writes: int  # the store's write count it was built at
    entries: list[tuple[datetime, str, int]]  # (processed at, batch id, recipient number)
    by_key: dict[str, list[int]]  # LookupKey -> positions in entries


def _from_seed(seed: SeedBatch) -> _Batch:
    return _Batch(
        id=seed.id,
        site_id=seed.site_id,
        site_name=seed.site_name,
        submitter=seed.submitter,
        created=seed.created,
        updated=seed.submitted_at or seed.created,
        description=seed.description,
        subject=seed.subject,
        issuer_name=seed.issuer_name,
        body=seed.body,
        options=dict(seed.options),
        rate=seed.rate,
        fail_permille=seed.fail_permille,
        synthetic_recipients=seed.recipients,
        attachments=list(seed.attachments),
        submitted_at=seed.submitted_at,
        scheduled_for=seed.scheduled_for,
    )


def _current_option(batch: _Batch, name: str) -> Any:
    if name == "Description":
        return batch.description
    if name == "Subject":
        return batch.subject
    if name == "IssuerName":
        return batch.issuer_name
    return batch.options.get(name)


def _summary(batch: _Batch, progress: _Progress) -> dict[str, Any]:
    return {
        "Id": batch.id,
        "State": progress.state,
        "Description": batch.description,
        "TotalCount": batch.total,
        "ScheduledFor": _ts(batch.scheduled_for),
        "StartedOn": _ts(progress.started_on),
        "ProcessedOn": _ts(progress.processed_on),
        "CreationDate": _ts(batch.created),
        "TotalSent": progress.sent,
        "TotalFailed": progress.failed,
        "SiteId": batch.site_id,
        "SiteName": batch.site_name,
        "Submitter": batch.submitter,
    }


def _ts(moment: datetime | None) -> str | None:
    """The service's timestamp form: seven fractional digits and an offset."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0+00:00"
