"""Async client for the EviNotice batches API (Namirial / Evicertia certified bulk email and SMS).

Built on ``connector.http.ResilientClient``. Which requests may be resent after they possibly
reached the server:

- reads (``GET`` one batch, ``QUERY`` the list) — yes;
- ``PUT`` body / attachments, ``DELETE`` attachments / recipients, and ``PATCH`` — yes: each sets
  a target value, so sending it twice leaves the batch as sending it once;
- ``POST`` create and ``POST`` recipients — no: each adds something, so a timeout after the
  request left raises ``AmbiguousOutcomeError`` and the caller checks before sending again.

Local checks raise ``InvalidRequestError`` (a ``ValueError``) before anything is sent. The
password travels only inside the ``httpx.BasicAuth`` header; it is in no repr, log or message.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any
from urllib.parse import quote

import httpx

from connector.errors import ConnectorError, IncompleteReadError
from connector.http import ClientLimits, ResilientClient
from connector.settings import EviNoticeSettings

__all__ = [
    "BATCHES_PATH",
    "MAX_PAGE_SIZE",
    "MAX_RECIPIENTS_PER_REQUEST",
    "STATES",
    "Attachment",
    "EviNoticeClient",
    "InvalidRequestError",
    "Recipient",
    "build_patch",
    "format_recipients",
]

BATCHES_PATH = "/v2/EviNotice/Batches"
MAX_RECIPIENTS_PER_REQUEST = 500
MAX_PAGE_SIZE = 100
STATES = ("Draft", "Submitted", "Scheduled", "Processing", "Processed")


class InvalidRequestError(ConnectorError, ValueError):
    """A request that breaks the API's documented rules, caught before it is sent."""


@dataclass(frozen=True)
class Recipient:
    """One recipient line: an email address or a phone number with country code."""

    address: str
    display_name: str
    legal_name: str | None = None
    lookup_key: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)  # template variables


@dataclass(frozen=True)
class Attachment:
    """One file attached to every message of a batch."""

    file_name: str
    content: bytes
    content_type: str = "application/octet-stream"


# The PATCH options of the vendor's page, keyed by their wire name, with the Python type wanted.
_OPTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "Description": str,
    "Subject": str,
    "IssuerName": str,
    "CostCentre": str,
    "AffidavitKinds": list,
    "Language": str,
    "AffidavitLanguage": str,
    "OnlineRetentionPeriod": int,
    "LtaStorage": bool,
    "PushNotificationUrl": str,
    "PushNotificationFilter": list,
    "PushNotificationExtraData": str,
    "CommitmentOptions": str,
    "CommitmentCommentsAllowed": bool,
    "RejectReasons": list,
    "AcceptReasons": list,
    "RequireRejectReason": bool,
    "RequireAcceptReason": bool,
    "BatchPushNotificationUrl": str,
    "AllowRefusal": bool,
}
_COMMITMENT_OPTIONS = ("Disabled", "Accept", "Reject", "AcceptOrReject")
_RESERVED_COLUMNS = ("Address", "DisplayName", "LegalName", "LookupKey")
_EMAIL = re.compile(r"^[^@\s|\"]+@[^@\s|\"]+\.[^@\s|\".]+$")
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
_PHONE_SEPARATORS = re.compile(r"[\s.\-()]")
# A field is quoted when it holds the separator, a quote, a line break, or edge whitespace the
# server would otherwise be free to trim.
_NEEDS_QUOTES = re.compile(r'[|"\r\n]|^\s|\s$')


class EviNoticeClient:
    """Create, fill, schedule and read EviNotice batches."""

    def __init__(
        self,
        settings: EviNoticeSettings,
        *,
        limits: ClientLimits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
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
        extra = _wire_options(options)
        if extra.keys() & payload.keys():
            raise InvalidRequestError("description, subject and issuer_name are given once")
        payload.update(extra)
        answer = await self._http.send_json("POST", BATCHES_PATH, json=payload, safe_to_retry=False)
        batch_id = answer.get("BatchId") if isinstance(answer, dict) else None
        if not isinstance(batch_id, str) or not batch_id:
            raise IncompleteReadError(f"POST {BATCHES_PATH}: the answer carries no BatchId")
        return batch_id

    async def set_body(self, batch_id: str, body: str) -> None:
        """Replace the message body (HTML or text) of a Draft batch."""
        if not isinstance(body, str):
            raise InvalidRequestError("body must be a string")
        await self._http.send("PUT", _path(batch_id, "Body"), json=body, safe_to_retry=True)

    async def set_attachments(self, batch_id: str, attachments: Iterable[Attachment]) -> None:
        """Replace the attachments of a Draft batch; an empty iterable clears them."""
        files = []
        names: set[str] = set()
        for item in attachments:
            if not item.file_name.strip():
                raise InvalidRequestError("every attachment needs a file name")
            if item.file_name in names:
                raise InvalidRequestError(f"attachment {item.file_name!r} appears twice")
            names.add(item.file_name)
            files.append(
                {
                    "FileName": item.file_name,
                    "ContentType": item.content_type,
                    "Content": base64.b64encode(item.content).decode("ascii"),
                }
            )
        await self._http.send("PUT", _path(batch_id, "Attachments"), json=files, safe_to_retry=True)

    async def clear_attachments(self, batch_id: str) -> None:
        """Remove every attachment of a Draft batch."""
        await self._http.send("DELETE", _path(batch_id, "Attachments"), safe_to_retry=True)

    async def add_recipients(self, batch_id: str, recipients: Iterable[Recipient]) -> int:
        """Append recipients in requests of at most 500; returns how many were sent.

        The iterable is consumed chunk by chunk, so memory stays flat. Chunks already sent stay
        on the batch if a later one fails; ``clear_recipients`` starts over.
        """
        sent = 0
        path = _path(batch_id, "Recipients")
        for chunk in _chunks(recipients, MAX_RECIPIENTS_PER_REQUEST):
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
        return answer

    async def iter_batches(
        self,
        owner_site_id: str | None = None,
        state: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        *,
        descending: bool = False,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every batch of a site (default: the configured one), one page at a time via cursors."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidRequestError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        if state is not None and state not in STATES:
            raise InvalidRequestError(f"state must be one of {', '.join(STATES)}")
        site = owner_site_id or self.settings.site_id
        query: dict[str, Any] = {
            "OwnerSiteId": site,
            "Limit": page_size,
            "Order": 1 if descending else 0,
        }
        if state is not None:
            query["State"] = state
        cursor: str | None = None
        while True:
            body = dict(query, Cursor=cursor) if cursor else query
            # QUERY is a read; its parameters travel in a JSON body, as the method intends.
            page = await self._http.send_json("QUERY", BATCHES_PATH, json=body, safe_to_retry=True)
            if not isinstance(page, dict) or not isinstance(page.get("Results"), list):
                raise IncompleteReadError(f"QUERY {BATCHES_PATH}: the answer has no Results list")
            results: list[dict[str, Any]] = page["Results"]
            more = bool(page.get("HasMoreResults"))
            next_cursor = page.get("Cursor")
            # A server that says "more" without moving its cursor would loop forever; checked
            # before yielding so a repeated page never reaches the caller.
            if more and (
                not isinstance(next_cursor, str) or not next_cursor or next_cursor == cursor
            ):
                raise IncompleteReadError(
                    f"QUERY {BATCHES_PATH}: HasMoreResults without a new cursor"
                )
            if results:
                yield results
            if not more:
                return
            cursor = next_cursor


def build_patch(
    *, state: str | None, scheduled_date: datetime | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    """The PATCH body, checked against the documented State / ScheduledDate rules."""
    if state is not None and state not in ("Draft", "Submitted"):
        raise InvalidRequestError("state must be 'Draft' or 'Submitted'")
    payload = _wire_options(options)
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


def format_recipients(recipients: Iterable[Recipient], *, first_number: int = 1) -> str:
    """The ``|``-separated recipients text: a header, then one escaped line per recipient."""
    rows = list(recipients)
    variables: dict[str, None] = {}  # ordered set of template variable names
    for number, recipient in enumerate(rows, start=first_number):
        _check_recipient(recipient, number)
        for name in recipient.variables:
            variables.setdefault(name, None)
    columns = ["Address", "DisplayName"]
    if any(r.legal_name for r in rows):
        columns.append("LegalName")
    if any(r.lookup_key for r in rows):
        columns.append("LookupKey")
    columns.extend(variables)
    lines = ["|".join(_escape(c) for c in columns)]
    for r in rows:
        fixed = {
            "Address": r.address.strip(),
            "DisplayName": r.display_name,
            "LegalName": r.legal_name or "",
            "LookupKey": r.lookup_key or "",
        }
        values = [fixed[c] if c in fixed else str(r.variables.get(c, "")) for c in columns]
        lines.append("|".join(_escape(v) for v in values))
    return "\n".join(lines) + "\n"


def _check_recipient(recipient: Recipient, number: int) -> None:
    address = recipient.address.strip()
    is_email = _EMAIL.match(address) is not None
    if not is_email and _PHONE.match(_PHONE_SEPARATORS.sub("", address)) is None:
        raise InvalidRequestError(
            f"recipient {number}: address {address!r} is neither an email address nor a "
            "phone number with country code"
        )
    if not recipient.display_name.strip():
        raise InvalidRequestError(f"recipient {number}: display name is empty")
    for name in recipient.variables:
        if not name.strip() or name.strip() != name:
            raise InvalidRequestError(f"recipient {number}: bad variable name {name!r}")
        if name.lower() in (c.lower() for c in _RESERVED_COLUMNS):
            raise InvalidRequestError(
                f"recipient {number}: variable {name!r} clashes with a fixed column"
            )


def _escape(value: str) -> str:
    if _NEEDS_QUOTES.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value


def _chunks(items: Iterable[Recipient], size: int) -> Iterator[list[Recipient]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _wire_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options keyed by wire name (``CostCentre``), accepting snake_case (``cost_centre``)."""
    wire: dict[str, Any] = {}
    for name, value in options.items():
        key = name if name in _OPTION_TYPES else _pascal(name)
        if key not in _OPTION_TYPES:
            raise InvalidRequestError(f"unknown EviNotice option {name!r}")
        if key in wire:
            raise InvalidRequestError(f"option {key} given twice")
        wanted = _OPTION_TYPES[key]
        # bool is an int in Python; the API's integers are not booleans.
        wrong_bool = wanted is int and isinstance(value, bool)
        if value is not None and (wrong_bool or not isinstance(value, wanted)):
            raise InvalidRequestError(f"option {key} has the wrong type")
        if key == "CommitmentOptions" and value is not None and value not in _COMMITMENT_OPTIONS:
            raise InvalidRequestError(
                f"CommitmentOptions must be one of {', '.join(_COMMITMENT_OPTIONS)}"
            )
        wire[key] = value
    return wire


def _pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


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
