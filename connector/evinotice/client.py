"""Async client for the EviNotice batches API (Namirial / Evicertia certified bulk email and SMS).

Built on ``connector.http.ResilientClient``. Which requests may be resent after they possibly
reached the server:

- reads (``GET`` one batch, ``QUERY`` the list) — yes;
- ``PUT`` body / attachments, ``DELETE`` attachments / recipients, and ``PATCH`` — yes: each sets
  a target value, so sending it twice leaves the batch as sending it once;
- ``POST`` create and ``POST`` recipients — no: each adds something, so a timeout after the
  request left raises ``AmbiguousOutcomeError`` and the caller checks before sending again
  (``recipients_count`` settles an ambiguous recipients request);
- ``POST`` to the evidence query — yes: it is a read.

Tolerated on the way in: the vendor's spellings ``HashMoreResults`` and ``ProgessPercentage``,
states no list names yet, and list cursors that are positions (rows repeat when batches are
created while paging newest first; every list is deduplicated by ``Id``).

``read_batch_lines`` hands the list on as JSON lines for the bulk load: the pages are parsed
anyway (cursor, ``Id``s, spellings), so each record is re-encoded once, keys sorted.

Local checks raise ``InvalidRequestError`` (a ``ValueError``) before anything is sent. The
password travels only inside the ``httpx.BasicAuth`` header; it is in no repr, log or message.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from connector.errors import IncompleteReadError
from connector.evinotice.options import InvalidRequestError, wire_options
from connector.evinotice.recipients import (
    Recipient,
    fill_placeholders,
    format_recipients,
    missing_placeholders,
    usable_address,
)
from connector.http import CHUNK_BYTES, ClientLimits, ResilientClient
from connector.settings import EviNoticeSettings

__all__ = [
    "BATCHES_PATH",
    "EVIDENCE_OUTCOMES",
    "EVIDENCE_PATH",
    "EVIDENCE_STATES",
    "MAX_PAGE_SIZE",
    "MAX_RECIPIENTS_PER_BATCH",
    "MAX_RECIPIENTS_PER_REQUEST",
    "STATES",
    "Attachment",
    "EviNoticeClient",
    "InvalidRequestError",
    "Recipient",
    "build_patch",
    "fill_placeholders",
    "format_recipients",
    "json_lines",
    "missing_placeholders",
    "usable_address",
]

BATCHES_PATH = "/v2/EviNotice/Batches"
EVIDENCE_PATH = "/api/v2/EviNotice/Query"
MAX_RECIPIENTS_PER_REQUEST = 500
MAX_RECIPIENTS_PER_BATCH = 100_000
MAX_PAGE_SIZE = 100
# The batch states the vendor's pages use; a batch in another state is still read and stored.
STATES = ("Draft", "Scheduled", "Submitted", "Processing", "Processed", "Sent", "Completed")
EVIDENCE_STATES = (
    "Submitted",
    "Processed",
    "Sent",
    "Dispatched",
    "Delivered",
    "Read",
    "Replied",
    "Closed",
    "Failed",
)
EVIDENCE_OUTCOMES = (
    "None",
    "Certified",
    "Sent",
    "Delivered",
    "Read",
    "Accepted",
    "Rejected",
    "Failed",
    "Cancelled",
    "Refused",
)
# The vendor's pages spell these two fields differently from the answers' usual names.
_SPELLINGS = {"HashMoreResults": "HasMoreResults", "ProgessPercentage": "ProgressPercentage"}


@dataclass(frozen=True)
class Attachment:
    """One file attached to every message of a batch, with optional key/value attributes
    (a value is a string or a list of strings)."""

    file_name: str
    content: bytes
    display_name: str | None = None  # the file name when not given
    attributes: Mapping[str, str | Sequence[str]] = field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        """The ``{DisplayName, FileName, Data, Attributes}`` object the API takes."""
        attributes = []
        for key, value in self.attributes.items():
            if isinstance(value, str):
                attributes.append({"Key": key, "Value": value})
            else:
                attributes.append({"Key": key, "Values": list(value)})
        return {
            "DisplayName": self.display_name or self.file_name,
            "FileName": self.file_name,
            "Data": base64.b64encode(self.content).decode("ascii"),
            "Attributes": attributes,
        }


class EviNoticeClient:
    """Create, fill, schedule and read EviNotice batches."""

    def __init__(
        self,
        settings: EviNoticeSettings,
        *,
        limits: ClientLimits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.settings = settings
        self.chunk_bytes = chunk_bytes
        self._http = ResilientClient(
            settings.base_url,
            auth=httpx.BasicAuth(settings.username, settings.password.reveal()),
            headers={"Accept": "application/json"},
            limits=limits,
            transport=transport,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> EviNoticeClient:
        """A client configured from the ``EVINOTICE_*`` environment variables."""
        return cls(EviNoticeSettings.from_env(env), **kwargs)

    def __repr__(self) -> str:
        return f"EviNoticeClient(base_url={self.settings.base_url!r})"

    async def __aenter__(self) -> EviNoticeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- writes --

    async def create_batch(
        self, *, description: str, subject: str, issuer_name: str, **options: Any
    ) -> str:
        """Create a Draft batch and return its ``BatchId``; not retried once possibly sent."""
        payload = {"Description": description, "Subject": subject, "IssuerName": issuer_name}
        for name, value in (("description", description), ("subject", subject)):
            if not isinstance(value, str) or not value.strip():
                raise InvalidRequestError(f"{name} must be a non-empty string")
        if not isinstance(issuer_name, str) or not issuer_name.strip():
            raise InvalidRequestError("issuer_name must be a non-empty string")
        extra = wire_options(options)
        if extra.keys() & payload.keys():
            raise InvalidRequestError("description, subject and issuer_name are given once")
        payload.update(extra)
        answer = await self._http.send_json("POST", BATCHES_PATH, json=payload, safe_to_retry=False)
        batch_id = answer.get("BatchId") if isinstance(answer, dict) else None
        if not isinstance(batch_id, str) or not batch_id:
            raise IncompleteReadError(f"POST {BATCHES_PATH}: the answer carries no BatchId")
        return batch_id

    async def set_body(self, batch_id: str, body: str) -> None:
        """Replace the body of a Draft batch: raw text with ``{{Variable}}`` placeholders."""
        if not isinstance(body, str):
            raise InvalidRequestError("body must be a string")
        # Raw text, not a JSON string: the service stores the request body as it comes.
        await self._http.send(
            "PUT",
            _path(batch_id, "Body"),
            content=body.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
            safe_to_retry=True,
        )

    async def set_attachments(self, batch_id: str, attachments: Iterable[Attachment]) -> None:
        """Replace the whole attachment set of a Draft batch; an empty iterable clears it."""
        files = []
        names: set[str] = set()
        for item in attachments:
            if not item.file_name.strip():
                raise InvalidRequestError("every attachment needs a file name")
            if item.file_name in names:
                raise InvalidRequestError(f"attachment {item.file_name!r} appears twice")
            names.add(item.file_name)
            files.append(item.wire())
        await self._http.send(
            "PUT",
            _path(batch_id, "Attachments"),
            json={"Attachments": files},
            safe_to_retry=True,
        )

    async def clear_attachments(self, batch_id: str) -> None:
        """Remove every attachment of a Draft batch."""
        await self._http.send("DELETE", _path(batch_id, "Attachments"), safe_to_retry=True)

    async def add_recipients(
        self, batch_id: str, recipients: Iterable[Recipient], *, already: int = 0
    ) -> int:
        """Append recipients in requests of at most 500; returns how many were sent.

        ``already`` is how many the batch holds now: a batch holds at most 100,000, and a
        sized ``recipients`` that would pass that is refused before anything is sent (an
        unsized one before the chunk that would pass it). The iterable is consumed chunk by
        chunk, so memory stays flat. Chunks already sent stay on the batch if a later one fails;
        ``recipients_count`` tells how many arrived, ``clear_recipients`` starts over.
        """
        if isinstance(recipients, Collection):
            _check_room(already, len(recipients))
        sent = 0
        path = _path(batch_id, "Recipients")
        for chunk in _chunks(recipients, MAX_RECIPIENTS_PER_REQUEST):
            _check_room(already + sent, len(chunk))
            text = format_recipients(chunk, first_number=sent + 1)
            # Appends: a resend after a lost answer would add the chunk twice.
            await self._http.send("POST", path, json=text, safe_to_retry=False)
            sent += len(chunk)
        return sent

    async def clear_recipients(self, batch_id: str) -> None:
        """Remove every recipient of a Draft batch."""
        await self._http.send("DELETE", _path(batch_id, "Recipients"), safe_to_retry=True)

    async def configure(
        self,
        batch_id: str,
        *,
        state: str | None = None,
        scheduled_date: datetime | None = None,
        **options: Any,
    ) -> None:
        """PATCH options and/or the state: ``Submitted`` (optionally at ``scheduled_date``) or
        back to ``Draft``; options may be given as ``cost_centre=`` or ``CostCentre=``."""
        payload = build_patch(state=state, scheduled_date=scheduled_date, options=options)
        # Sets target values: a resend leaves the batch as one send would.
        await self._http.send("PATCH", _path(batch_id), json=payload, safe_to_retry=True)

    async def schedule(self, batch_id: str, at: datetime) -> None:
        """Finalise a Draft batch to be sent at ``at`` (timezone-aware), on the service's clock."""
        await self.configure(batch_id, state="Submitted", scheduled_date=at)

    async def submit_now(self, batch_id: str) -> None:
        """Finalise a Draft batch to be sent as soon as the service can."""
        await self.configure(batch_id, state="Submitted")

    async def reschedule(self, batch_id: str, at: datetime) -> None:
        """Move the date of a scheduled batch that has not started (the service refuses later)."""
        await self.configure(batch_id, state="Submitted", scheduled_date=at)

    async def revert(self, batch_id: str) -> None:
        """Put a scheduled batch back to Draft; refused (``ValidationError``) once it started."""
        await self.configure(batch_id, state="Draft")

    # -- reads --

    async def get_batch(
        self,
        batch_id: str,
        *,
        include_recipients_count: bool = True,
        include_attachments: bool = False,
    ) -> dict[str, Any]:
        """One batch with its progress counters and EviNotice settings."""
        params = {
            "IncludeRecipientsCount": _bool(include_recipients_count),
            "IncludeAttachments": _bool(include_attachments),
        }
        answer = await self._http.send_json(
            "GET", _path(batch_id), params=params, safe_to_retry=True
        )
        if not isinstance(answer, dict):
            raise IncompleteReadError(f"GET {_path(batch_id)}: the answer is not an object")
        return _usual_spellings(answer)

    async def recipients_count(self, batch_id: str) -> int:
        """How many recipients the batch holds now (settles an ambiguous recipients request)."""
        batch = await self.get_batch(batch_id, include_recipients_count=True)
        count = batch.get("TotalCount")
        if not isinstance(count, int) or isinstance(count, bool):
            raise IncompleteReadError(f"GET {_path(batch_id)}: no TotalCount in the answer")
        return count

    async def iter_batches(
        self,
        owner_site_id: str | None = None,
        state: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        *,
        descending: bool = False,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every batch of a site (default: the configured one) once, a page at a time."""
        query = self._batches_query(owner_site_id, state, page_size, descending)
        # QUERY is a read; its parameters travel in a JSON body, as the method intends.
        async for page in self._cursor_pages("QUERY", BATCHES_PATH, query):
            yield page

    async def read_batch_lines(
        self,
        owner_site_id: str | None = None,
        state: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        *,
        descending: bool = False,
        chunk_bytes: int | None = None,
    ) -> AsyncIterator[bytes]:
        """``iter_batches`` as JSON lines: chunks of about ``chunk_bytes`` (the client's by
        default), one batch per line, each batch once, under the usual spellings, keys sorted."""
        query = self._batches_query(owner_site_id, state, page_size, descending)
        chunk_bytes = chunk_bytes or self.chunk_bytes
        buffer = bytearray()
        async for page in self._cursor_pages("QUERY", BATCHES_PATH, query):
            buffer += json_lines(page)
            if len(buffer) >= chunk_bytes:
                yield bytes(buffer)
                buffer.clear()
        if buffer:
            yield bytes(buffer)

    def _batches_query(
        self, owner_site_id: str | None, state: str | None, page_size: int, descending: bool
    ) -> dict[str, Any]:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidRequestError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        if state is not None and state not in STATES:
            raise InvalidRequestError(f"state must be one of {', '.join(STATES)}")
        query: dict[str, Any] = {
            "OwnerSiteId": owner_site_id or self.settings.site_id,
            "Limit": page_size,
            "Order": 1 if descending else 0,
        }
        if state is not None:
            query["State"] = state
        return query

    async def iter_evidence(
        self,
        *,
        lookup_keys: Sequence[str] | None = None,
        owner: str | None = None,
        state: str | None = None,
        outcome: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Per-recipient evidence records (``POST /api/v2/EviNotice/Query``), each once."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidRequestError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        if state is not None and state not in EVIDENCE_STATES:
            raise InvalidRequestError(f"state must be one of {', '.join(EVIDENCE_STATES)}")
        if outcome is not None and outcome not in EVIDENCE_OUTCOMES:
            raise InvalidRequestError(f"outcome must be one of {', '.join(EVIDENCE_OUTCOMES)}")
        query: dict[str, Any] = {"Limit": page_size}
        if lookup_keys is not None:
            keys = list(lookup_keys)
            if not keys or not all(isinstance(k, str) and k for k in keys):
                raise InvalidRequestError("lookup_keys must be non-empty strings")
            query["LookupKeys"] = keys
        for name, value in (("Owner", owner), ("State", state), ("Outcome", outcome)):
            if value is not None:
                query[name] = value
        async for page in self._cursor_pages("POST", EVIDENCE_PATH, query):
            yield page

    async def _cursor_pages(
        self, method: str, path: str, query: dict[str, Any]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Follow a cursor to the end, yielding each page's rows not seen before (by ``Id``).

        The end is ``HasMoreResults`` false where the answer has the flag, else an empty page
        (the evidence query documents no flag).
        """
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            body = dict(query, Cursor=cursor) if cursor else query
            page = await self._http.send_json(method, path, json=body, safe_to_retry=True)
            if not isinstance(page, dict) or not isinstance(page.get("Results"), list):
                raise IncompleteReadError(f"{method} {path}: the answer has no Results list")
            page = _usual_spellings(page)
            results: list[dict[str, Any]] = page["Results"]
            flag = page.get("HasMoreResults")
            more = bool(flag) if flag is not None else bool(results)
            next_cursor = page.get("Cursor")
            # A server that says "more" without moving its cursor would loop forever; checked
            # before yielding so a repeated page never reaches the caller.
            if more and (
                not isinstance(next_cursor, str) or not next_cursor or next_cursor == cursor
            ):
                raise IncompleteReadError(f"{method} {path}: more results without a new cursor")
            fresh = []
            for row in results:
                key = row.get("Id") if isinstance(row, dict) else None
                if not isinstance(key, str):
                    raise IncompleteReadError(f"{method} {path}: a result without an Id")
                if key not in seen:
                    seen.add(key)
                    fresh.append(_usual_spellings(row))
            if fresh:
                yield fresh
            if not more:
                return
            cursor = next_cursor


def build_patch(
    *, state: str | None, scheduled_date: datetime | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    """The PATCH body, checked against the documented State / ScheduledDate rules."""
    if state is not None and state not in ("Draft", "Submitted"):
        raise InvalidRequestError("state must be 'Draft' or 'Submitted'")
    payload = wire_options(options)
    if scheduled_date is not None:
        if state == "Draft":
            raise InvalidRequestError("state 'Draft' cannot come with a scheduled_date")
        if state != "Submitted":
            raise InvalidRequestError("scheduled_date needs state='Submitted'")
        if not isinstance(scheduled_date, datetime):
            raise InvalidRequestError("scheduled_date must be a datetime")
        if scheduled_date.tzinfo is None:
            # The API reads offsets; a naive value would be guessed at, so refuse it.
            raise InvalidRequestError("scheduled_date must be timezone-aware")
        payload["ScheduledDate"] = _iso(scheduled_date)
    if state is not None:
        payload["State"] = state
    if not payload:
        raise InvalidRequestError("nothing to configure: give a state or at least one option")
    return payload


def json_lines(records: Iterable[dict[str, Any]]) -> bytes:
    """Records as JSON lines, keys sorted: the text the row builders keep in ``raw``, so the
    bulk path's hash of a line does not move when the service reorders a record's fields."""
    option = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    return b"".join([orjson.dumps(record, option=option) for record in records])


def _chunks(items: Iterable[Recipient], size: int) -> Iterator[list[Recipient]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _check_room(already: int, adding: int) -> None:
    if already + adding > MAX_RECIPIENTS_PER_BATCH:
        raise InvalidRequestError(
            f"a batch holds at most {MAX_RECIPIENTS_PER_BATCH} recipients: it has {already} "
            f"and {adding} more would pass that; split the audience over several batches"
        )


def _usual_spellings(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer with the vendor's alternative field spellings under their usual names."""
    if not _SPELLINGS.keys() & answer.keys():
        return answer
    fixed = dict(answer)
    for vendor, usual in _SPELLINGS.items():
        if vendor in fixed:
            value = fixed.pop(vendor)
            fixed.setdefault(usual, value)
    return fixed


def _path(batch_id: str, *rest: str) -> str:
    if not isinstance(batch_id, str) or not batch_id.strip():
        raise InvalidRequestError("batch_id must be a non-empty string")
    # Quoted whole, so an id can never step into another path.
    return "/".join((BATCHES_PATH, quote(batch_id, safe=""), *rest))


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
