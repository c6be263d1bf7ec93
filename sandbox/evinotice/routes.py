"""The EviNotice part of the sandbox: an in-memory batch store and the routes serving it.

``EviNoticeStore`` holds batches and derives their progress from sandbox time, so the same seed
and clock always give the same state: a submitted batch starts ``queue_delay`` seconds later (or
at its ``ScheduledDate`` if that is later), then processes a fixed number of recipients a second;
a small deterministic share of recipients fails, and so does every address whose local part starts
with ``fail`` or ``bounce``. ``evinotice_routes`` serves the store under ``/v2/EviNotice/Batches``
with HTTP Basic authentication and problem-details errors, including the literal ``QUERY`` method.

Decisions where the vendor's documentation is silent:

- ``QUERY`` takes its parameters from the query string, a JSON object body, or both (body wins);
  names match case-insensitively.
- Cursors are opaque URL-safe strings encoding the sort order and the last row seen
  ``(CreationDate, Id)``, so rows created between pages never shift the next page.
- Reverting to ``Draft`` once processing started answers ``409 Conflict``; so does changing the
  content (body, attachments, recipients, options) of a batch that is not a ``Draft``. A PATCH
  that changes nothing (same options, the state the batch is already in) is a ``200`` no-op, which
  makes a repeated PATCH safe.
- Submitting needs a subject, a body and at least one recipient (``400`` otherwise).
- The body and the recipients text may be sent raw (``text/*``) or as a JSON string; attachments
  are a JSON list of ``{FileName, Content (Base64), ContentType?}``.
- Unknown fields in a create or PATCH body are a ``400`` (the real API may ignore them; the sandbox
  is strict so client typos show up).
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import hmac
import io
import math
import random
import re
import threading
import uuid
from bisect import bisect_left, bisect_right, insort
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from connector.settings import SANDBOX_EVINOTICE_SITE_ID
from sandbox.clock import SandboxClock, format_timestamp
from sandbox.evinotice.data import (
    QUEUE_DELAY_SECONDS,
    SeedBatch,
    batch_parameters,
    generate_batches,
)

BASE_PATH = "/v2/EviNotice/Batches"
# The site the settings fall back to, so a client with default settings lists the seeded batches.
DEFAULT_SITE_ID = SANDBOX_EVINOTICE_SITE_ID
DEFAULT_SITE_NAME = "Sandbox Site"
MAX_RECIPIENTS_PER_REQUEST = 500
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 50
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
STATES = ("Draft", "Submitted", "Scheduled", "Processing", "Processed")

_EMAIL = re.compile(r"^[^@\s|\"]+@[^@\s|\"]+\.[^@\s|\".]+$")
# E.164: a plus, a country code, at most 15 digits in all; spaces, dots, dashes and parentheses
# are accepted as separators and dropped.
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
_PHONE_SEPARATORS = re.compile(r"[\s.\-()]")


class SandboxProblem(Exception):
    """An error the sandbox answers as problem details."""

    def __init__(
        self, status: int, detail: str, errors: Mapping[str, list[str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = dict(errors or {})

    def body(self) -> dict[str, Any]:
        """The RFC 9110 problem-details document for this error."""
        return {
            "type": _RFC_TYPES.get(self.status, _RFC_TYPES[400]),
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "traceId": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00",
            "errors": self.errors,
        }


_TITLES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict"}
_RFC_TYPES = {
    status: f"https://tools.ietf.org/html/rfc9110#section-15.5.{section}"
    for status, section in ((400, 1), (401, 2), (404, 5), (409, 10))
}


def _bad(field_name: str, message: str) -> SandboxProblem:
    return SandboxProblem(400, message, {field_name: [message]})


# --- option schema -------------------------------------------------------------------------

_COMMITMENT_OPTIONS = ("Disabled", "Accept", "Reject", "AcceptOrReject")


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and re.match(r"^https?://[^\s/]+", value) is not None


def _is_commitment(value: Any) -> bool:
    return value in _COMMITMENT_OPTIONS


# name -> (check, what the check wants); the names and types of the vendor's PATCH page.
_OPTIONS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "Description": (_is_str, "a string"),
    "Subject": (_is_str, "a string"),
    "IssuerName": (_is_str, "a string"),
    "CostCentre": (_is_str, "a string"),
    "AffidavitKinds": (_is_str_list, "a list of strings"),
    "Language": (_is_str, "a string"),
    "AffidavitLanguage": (_is_str, "a string"),
    "OnlineRetentionPeriod": (_is_non_negative_int, "a non-negative integer"),
    "LtaStorage": (_is_bool, "a boolean"),
    "PushNotificationUrl": (_is_url, "an http(s) URL"),
    "PushNotificationFilter": (_is_str_list, "a list of strings"),
    "PushNotificationExtraData": (_is_str, "a string"),
    "CommitmentOptions": (_is_commitment, f"one of {', '.join(_COMMITMENT_OPTIONS)}"),
    "CommitmentCommentsAllowed": (_is_bool, "a boolean"),
    "RejectReasons": (_is_str_list, "a list of strings"),
    "AcceptReasons": (_is_str_list, "a list of strings"),
    "RequireRejectReason": (_is_bool, "a boolean"),
    "RequireAcceptReason": (_is_bool, "a boolean"),
    "BatchPushNotificationUrl": (_is_url, "an http(s) URL"),
    "AllowRefusal": (_is_bool, "a boolean"),
}
# Kept on the batch itself rather than among the options; never null.
_CORE_FIELDS = ("Description", "Subject", "IssuerName")


def _validate_options(payload: Mapping[str, Any], *, allowed_extra: tuple[str, ...]) -> None:
    errors: dict[str, list[str]] = {}
    for name, value in payload.items():
        if name in allowed_extra:
            continue
        spec = _OPTIONS.get(name)
        if spec is None:
            errors[name] = ["Unknown field."]
            continue
        check, wanted = spec
        if value is None and name not in _CORE_FIELDS:
            continue  # null clears an optional setting
        if not check(value):
            errors[name] = [f"Must be {wanted}."]
    if errors:
        raise SandboxProblem(400, "One or more validation errors occurred.", errors)


def _parse_timestamp(value: Any, field_name: str) -> datetime:
    if not isinstance(value, str):
        raise _bad(field_name, "Must be an ISO 8601 date and time.")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(field_name, "Must be an ISO 8601 date and time.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # no offset given: read as UTC
    return moment.astimezone(UTC)


# --- recipients ----------------------------------------------------------------------------

_RECIPIENT_COLUMNS = ("Address", "DisplayName", "LegalName", "LookupKey")


def valid_address(address: str) -> bool:
    """An email address, or a phone number with its country code (``+34 600 000 000``)."""
    if _EMAIL.match(address):
        return True
    return _PHONE.match(_PHONE_SEPARATORS.sub("", address)) is not None


def parse_recipients(text: str) -> list[dict[str, Any]]:
    """Parse the ``|``-separated recipients text; ``SandboxProblem(400)`` names the bad line."""
    if not text.strip():
        raise _bad("Recipients", "The recipients text is empty.")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="|", quotechar='"', strict=True)
    line = 1  # physical line where the next record starts
    try:
        header = next(reader)
    except csv.Error as exc:
        raise _bad("Recipients", f"Line 1: malformed header ({exc}).") from None
    line = reader.line_num + 1
    columns = [name.strip() for name in header]
    canonical = {c.lower(): c for c in _RECIPIENT_COLUMNS}
    columns = [canonical.get(name.lower(), name) for name in columns]
    problems = [
        f"missing required column {c}" for c in ("Address", "DisplayName") if c not in columns
    ]
    if any(not name for name in columns):
        problems.append("empty column name")
    if len(set(columns)) != len(columns):
        problems.append("duplicate column name")
    if problems:
        raise _bad("Recipients", f"Line 1: {'; '.join(problems)}.")
    rows: list[dict[str, Any]] = []
    while True:
        start = line
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise _bad("Recipients", f"Line {start}: malformed quoting ({exc}).") from None
        line = reader.line_num + 1
        if not record or record == [""]:
            continue  # blank line
        if len(record) != len(columns):
            raise _bad(
                "Recipients",
                f"Line {start}: expected {len(columns)} fields, found {len(record)}.",
            )
        values = dict(zip(columns, record, strict=True))
        address = values["Address"].strip()
        if not valid_address(address):
            raise _bad(
                "Recipients",
                f"Line {start}: Address {address!r} is neither an email address nor a phone "
                "number with country code.",
            )
        if not values["DisplayName"].strip():
            raise _bad("Recipients", f"Line {start}: DisplayName is empty.")
        if len(rows) == MAX_RECIPIENTS_PER_REQUEST:
            raise _bad(
                "Recipients",
                f"At most {MAX_RECIPIENTS_PER_REQUEST} recipients per request; line {start} "
                "is one too many.",
            )
        rows.append(
            {
                "Address": address,
                "DisplayName": values["DisplayName"],
                "LegalName": values.get("LegalName") or None,
                "LookupKey": values.get("LookupKey") or None,
                "Variables": {k: v for k, v in values.items() if k not in _RECIPIENT_COLUMNS},
            }
        )
    if not rows:
        raise _bad("Recipients", "No recipient lines after the header.")
    return rows


def _recipient_fails(batch_id: str, address: str, fail_permille: int) -> bool:
    local = address.split("@", 1)[0].lower()
    if local.startswith(("fail", "bounce")):
        return True  # lets a user see failures on purpose
    digest = hashlib.blake2b(f"{batch_id}|{address}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % 1000 < fail_permille


# --- the store -----------------------------------------------------------------------------


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
    ) -> None:
        self.clock = clock
        self.site_id = site_id
        self.site_name = site_name
        self.queue_delay = queue_delay
        # One lock for reads and writes: every operation is short and synchronous, so holding it
        # never blocks the event loop for long, and a threaded server stays consistent too.
        self._lock = threading.RLock()
        self._ids = random.Random(f"evinotice-ids-{seed}")
        self._batches: dict[str, _Batch] = {}
        # Per site, (created, id) in ascending order: the key cursors point into.
        self._order: dict[str, list[tuple[datetime, str]]] = {}
        anchor = clock.now()
        for seeded in generate_batches(
            seed=seed, count=batches, anchor=anchor, site_id=site_id, site_name=site_name
        ):
            self._insert(_from_seed(seeded))

    # -- writes --

    def create_batch(self, payload: Mapping[str, Any], *, submitter: str) -> str:
        """Create a Draft batch from the POST body; returns its id."""
        for name in ("ScheduledDate", "State"):
            if name in payload:
                raise _bad(name, f"{name} is set with PATCH once the batch is configured.")
        _validate_options(payload, allowed_extra=())
        missing = {
            name: ["Required."]
            for name in _CORE_FIELDS
            if not isinstance(payload.get(name), str) or not payload[name].strip()
        }
        if missing:
            raise SandboxProblem(400, "One or more validation errors occurred.", missing)
        with self._lock:
            batch_id = str(uuid.UUID(int=self._ids.getrandbits(128), version=4))
            rate, fail_permille = batch_parameters(batch_id)
            now = self.clock.now()
            options = {k: v for k, v in payload.items() if k not in _CORE_FIELDS and v is not None}
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

    def set_attachments(self, batch_id: str, files: Any) -> None:
        """Replace the attachments of a Draft batch (``[]`` clears them)."""
        attachments = _parse_attachments(files)
        with self._lock:
            batch = self._editable(batch_id)
            batch.attachments = attachments
            batch.updated = self.clock.now()

    def add_recipients(self, batch_id: str, text: str) -> int:
        """Append recipients from the ``|``-separated text to a Draft batch; returns how many."""
        rows = parse_recipients(text)
        with self._lock:
            batch = self._editable(batch_id)
            failed = batch.fail_prefix[-1] if batch.fail_prefix else 0
            for row in rows:
                failed += _recipient_fails(batch.id, row["Address"], batch.fail_permille)
                batch.fail_prefix.append(failed)
            batch.recipients.extend(rows)
            batch.updated = self.clock.now()
        return len(rows)

    def clear_recipients(self, batch_id: str) -> None:
        """Remove every recipient of a Draft batch."""
        with self._lock:
            batch = self._editable(batch_id)
            batch.recipients = []
            batch.fail_prefix = []
            batch.synthetic_recipients = 0
            batch.updated = self.clock.now()

    def configure(self, batch_id: str, payload: Mapping[str, Any]) -> None:
        """Apply a PATCH: options, then ``State`` (``Draft`` reverts, ``Submitted`` finalises)."""
        _validate_options(payload, allowed_extra=("State", "ScheduledDate"))
        state = payload.get("State")
        if "State" in payload and state not in ("Draft", "Submitted"):
            raise _bad("State", "Must be Draft or Submitted.")
        scheduled: datetime | None = None
        if payload.get("ScheduledDate") is not None:
            if state == "Draft":
                raise _bad("ScheduledDate", "State Draft cannot come with a ScheduledDate.")
            if state != "Submitted":
                raise _bad("ScheduledDate", "ScheduledDate needs State Submitted.")
            scheduled = _parse_timestamp(payload["ScheduledDate"], "ScheduledDate")
        options = {k: v for k, v in payload.items() if k not in ("State", "ScheduledDate")}
        with self._lock:
            batch = self._get(batch_id)
            now = self.clock.now()
            progress = self._progress(batch, now)
            started = progress.state in ("Processing", "Processed")
            changes = {k: v for k, v in options.items() if _current_option(batch, k) != v}
            for name in _CORE_FIELDS:
                if name in changes and (not isinstance(changes[name], str) or not changes[name]):
                    raise _bad(name, "Must not be empty.")
            # Decide everything before touching the batch, so a refused PATCH changes nothing.
            revert = state == "Draft" and progress.state != "Draft"
            if revert and started:
                raise SandboxProblem(
                    409, f"Batch {batch_id} is {progress.state}; it can no longer go back to Draft."
                )
            draft_after = progress.state == "Draft" or revert
            if changes and not draft_after:
                raise SandboxProblem(
                    409,
                    f"Batch {batch_id} is {progress.state}; revert it to Draft to change "
                    f"{', '.join(sorted(changes))}.",
                )
            submit = False
            if state == "Submitted":
                if draft_after:
                    submit = True
                elif started:
                    if scheduled is not None and scheduled != batch.scheduled_for:
                        raise SandboxProblem(
                            409, f"Batch {batch_id} is {progress.state}; it cannot be rescheduled."
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
                "ProgressPercentage": progress.percentage,
                "Outcome": progress.outcome,
                "TotalCount": batch.total if include_recipients_count else None,
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
        """One page of a site's batches, oldest first (``order=0``) or newest first (``1``)."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise _bad("Limit", f"Must be between 1 and {MAX_PAGE_SIZE}.")
        if order not in (0, 1):
            raise _bad("Order", "Must be 0 (ascending) or 1 (descending).")
        if state is not None and state not in STATES:
            raise _bad("State", f"Must be one of {', '.join(STATES)}.")
        after = decode_cursor(cursor, order) if cursor else None
        with self._lock:
            now = self.clock.now()
            keys = self._order.get(owner_site_id, [])
            if order == 0:
                start = bisect_right(keys, after) if after else 0
                candidates = (keys[i] for i in range(start, len(keys)))
            else:
                end = bisect_left(keys, after) if after else len(keys)
                candidates = (keys[i] for i in range(end - 1, -1, -1))
            page: list[tuple[tuple[datetime, str], dict[str, Any]]] = []
            more = False
            for key in candidates:
                batch = self._batches[key[1]]
                progress = self._progress(batch, now)
                if state is not None and progress.state != state:
                    continue
                if len(page) == limit:
                    more = True
                    break
                page.append((key, _summary(batch, progress)))
        last = page[-1][0] if page else after
        return {
            "Cursor": encode_cursor(last, order) if last else None,
            "HasMoreResults": more,
            "Results": [row for _, row in page],
        }

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

    def _progress(self, batch: _Batch, now: datetime) -> _Progress:
        if batch.submitted_at is None:
            return _Progress("Draft", None, None, 0, 0, 0.0, batch.updated)
        start = batch.submitted_at + timedelta(seconds=self.queue_delay)
        if batch.scheduled_for is not None and batch.scheduled_for > start:
            start = batch.scheduled_for
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
    return None if moment is None else format_timestamp(moment)


def _parse_attachments(files: Any) -> list[dict[str, Any]]:
    if not isinstance(files, list):
        raise _bad("Attachments", "Must be a list of {FileName, Content} objects.")
    parsed: list[dict[str, Any]] = []
    total = 0
    names: set[str] = set()
    for i, item in enumerate(files):
        where = f"[{i}]"
        if not isinstance(item, dict):
            raise _bad(where, "Must be an object with FileName and Content.")
        name, content = item.get("FileName"), item.get("Content")
        content_type = item.get("ContentType", "application/octet-stream")
        if not isinstance(name, str) or not name.strip():
            raise _bad(f"{where}.FileName", "Required.")
        if name in names:
            raise _bad(f"{where}.FileName", f"Duplicate file name {name!r}.")
        if not isinstance(content_type, str):
            raise _bad(f"{where}.ContentType", "Must be a string.")
        unknown = set(item) - {"FileName", "Content", "ContentType"}
        if unknown:
            raise _bad(f"{where}.{sorted(unknown)[0]}", "Unknown field.")
        if not isinstance(content, str):
            raise _bad(f"{where}.Content", "Must be a Base64 string.")
        try:
            # Python tolerates surplus padding; .NET's Base64 decoder does not, so neither do we.
            if len(content) % 4:
                raise ValueError("length is not a multiple of 4")
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise _bad(f"{where}.Content", f"{name}: not valid Base64.") from None
        total += len(data)
        if total > MAX_ATTACHMENT_BYTES:
            raise _bad(f"{where}.Content", f"Attachments exceed {MAX_ATTACHMENT_BYTES} bytes.")
        names.add(name)
        parsed.append(
            {
                "FileName": name,
                "ContentType": content_type,
                "Size": len(data),
                "Content": base64.b64encode(data).decode("ascii"),
            }
        )
    return parsed


# --- cursors -------------------------------------------------------------------------------


def encode_cursor(key: tuple[datetime, str], order: int) -> str:
    """An opaque cursor: the sort order and the last row seen, ``(CreationDate, Id)``."""
    raw = orjson.dumps({"o": order, "t": key[0].isoformat(), "i": key[1]})
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, order: int) -> tuple[datetime, str]:
    """The position a cursor points at; ``SandboxProblem(400)`` for anything not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
        key = (datetime.fromisoformat(data["t"]).astimezone(UTC), str(data["i"]))
        cursor_order = data["o"]
    except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError):
        raise _bad("Cursor", "Not a cursor this API issued.") from None
    if cursor_order != order:
        raise _bad("Cursor", "The cursor was issued for the other sort order.")
    return key


# --- HTTP ----------------------------------------------------------------------------------


class _JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _problem_response(problem: SandboxProblem) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="EviNotice"'} if problem.status == 401 else None
    return Response(
        orjson.dumps(problem.body()),
        status_code=problem.status,
        media_type="application/problem+json",
        headers=headers,
    )


Handler = Callable[[Request], Awaitable[Response]]


def _credentials_match(header: str | None, username: bytes, password: bytes) -> bool:
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        given = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, secret = given.partition(b":")
    # Both comparisons always run, in constant time, so timing tells nothing about which failed.
    user_ok = hmac.compare_digest(user, username)
    secret_ok = hmac.compare_digest(secret, password)
    return bool(sep) and user_ok and secret_ok


async def _json(request: Request, *, required: bool = True) -> Any:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise _bad("body", "A JSON body is required.")
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("body", "The body is not valid JSON.") from None


async def _text(request: Request, field_name: str) -> str:
    """A text payload sent raw (``text/*``) or as a JSON string."""
    content_type = request.headers.get("content-type", "").lower()
    if "json" in content_type:
        value = await _json(request)
        if isinstance(value, dict) and isinstance(value.get(field_name), str):
            return value[field_name]
        if not isinstance(value, str):
            raise _bad(field_name, f"Send {field_name} as a JSON string or as text.")
        return value
    raw = await request.body()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(field_name, "The body is not UTF-8 text.") from None


def _flag(request: Request, name: str) -> bool:
    value = _param(dict(request.query_params), name)
    if value is None:
        return False
    lowered = str(value).lower()
    if lowered not in ("true", "false"):
        raise _bad(name, "Must be true or false.")
    return lowered == "true"


def _param(params: Mapping[str, Any], name: str) -> Any:
    lowered = name.lower()
    for key, value in params.items():
        if key.lower() == lowered:
            return value
    return None


def _int_param(params: Mapping[str, Any], name: str, default: int) -> int:
    value = _param(params, name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise _bad(name, "Must be an integer.")
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise _bad(name, "Must be an integer.") from None


def evinotice_routes(store: EviNoticeStore, *, username: str, password: str) -> list[BaseRoute]:
    """The ``/v2/EviNotice/Batches`` routes over ``store``, behind HTTP Basic authentication."""
    user_bytes, password_bytes = username.encode(), password.encode()

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                if not _credentials_match(
                    request.headers.get("authorization"), user_bytes, password_bytes
                ):
                    raise SandboxProblem(401, "Missing or invalid Basic credentials.")
                return await handler(request)
            except SandboxProblem as problem:
                return _problem_response(problem)

        return endpoint

    def batch_id(request: Request) -> str:
        return str(request.path_params["batch_id"])

    async def collection(request: Request) -> Response:
        if request.method == "POST":
            payload = await _json(request)
            if not isinstance(payload, dict):
                raise _bad("body", "Must be a JSON object.")
            new_id = store.create_batch(payload, submitter=username)
            return _JSONResponse({"BatchId": new_id})
        return await list_batches(request)

    async def list_batches(request: Request) -> Response:
        params: dict[str, Any] = dict(request.query_params)
        body = await _json(request, required=False)
        if body is not None:
            if not isinstance(body, dict):
                raise _bad("body", "QUERY parameters must be a JSON object.")
            # Body wins; drop query-string keys it repeats under another spelling.
            for key in list(params):
                if _param(body, key) is not None:
                    del params[key]
            params.update(body)
        site = _param(params, "OwnerSiteId")
        if not isinstance(site, str) or not site:
            raise _bad("OwnerSiteId", "Required.")
        state = _param(params, "State")
        cursor = _param(params, "Cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise _bad("Cursor", "Must be a string.")
        page = store.query(
            owner_site_id=site,
            state=str(state) if state not in (None, "") else None,
            cursor=cursor or None,
            limit=_int_param(params, "Limit", DEFAULT_PAGE_SIZE),
            order=_int_param(params, "Order", 0),
        )
        return _JSONResponse(page)

    async def one(request: Request) -> Response:
        if request.method == "PATCH":
            payload = await _json(request)
            if not isinstance(payload, dict):
                raise _bad("body", "Must be a JSON object.")
            store.configure(batch_id(request), payload)
            return Response(status_code=200)
        return _JSONResponse(
            store.get_batch(
                batch_id(request),
                include_recipients_count=_flag(request, "IncludeRecipientsCount"),
                include_attachments=_flag(request, "IncludeAttachments"),
            )
        )

    async def body(request: Request) -> Response:
        store.set_body(batch_id(request), await _text(request, "Body"))
        return Response(status_code=200)

    async def attachments(request: Request) -> Response:
        if request.method == "DELETE":
            store.set_attachments(batch_id(request), [])
        else:
            store.set_attachments(batch_id(request), await _json(request))
        return Response(status_code=200)

    async def recipients(request: Request) -> Response:
        if request.method == "DELETE":
            store.clear_recipients(batch_id(request))
        else:
            store.add_recipients(batch_id(request), await _text(request, "Recipients"))
        return Response(status_code=200)

    item = BASE_PATH + "/{batch_id}"
    return [
        Route(BASE_PATH, guarded(collection), methods=["POST", "QUERY"]),
        Route(item, guarded(one), methods=["GET", "PATCH"]),
        Route(item + "/Body", guarded(body), methods=["PUT"]),
        Route(item + "/Attachments", guarded(attachments), methods=["PUT", "DELETE"]),
        Route(item + "/Recipients", guarded(recipients), methods=["POST", "DELETE"]),
    ]
