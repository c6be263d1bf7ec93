"""Async client of the Marketplace Notifications API: complete, fast collection reads and
contact writes.

Reading a collection (``read``) orders by ``id`` and yields rows in chunks, never all at once:

- **streaming** when the server confirms it (``MPT-Streaming: true`` echoed); an interrupted
  stream resumes after the last id received;
- **concurrent paging** otherwise: the first page's ``total`` says how many pages there are
  (a null total: read to the first short page), and a window of requests is kept in flight,
  pages yielded in order; a slow page does not stall the others;
- **sequential paging** on request (the baseline the benchmark compares against).

The strategies themselves are in ``connector.marketplace.paging``.

Rows that shift between pages while data changes are caught both ways: a repeated row has an
id not above the last one yielded and is dropped; a skipped row is found by comparing the
server's count (``limit=0``) over id ranges with what was yielded, narrowing down to the gaps
between pages and fetching just those.

Write safety: PUT, block, unblock and DELETE reach the same end state when repeated, so they
are retried; POST create is not, and a create whose outcome is unknown raises
``AmbiguousOutcomeError`` (look the email up before sending it again). A write naming a contact
that no longer exists raises ``ContactGoneError`` (block / unblock / update answer it with 400
"not found", not 404).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import orjson

from connector.errors import (
    ConflictError,
    ConnectionFailedError,
    ContactGoneError,
    NotFoundError,
    TransportError,
    ValidationError,
)
from connector.http import CHUNK_BYTES, ClientLimits, ResilientClient
from connector.marketplace import rql
from connector.marketplace.paging import OffsetPaging, Page, StreamPaging, loads_line
from connector.settings import MarketplaceSettings

log = logging.getLogger(__name__)

API_PREFIX = "/public/v1/notifications"
RESOURCES = ("contacts", "categories", "batches", "messages")
PAGE_SIZE = 100  # the server caps limit at 100
STREAM_HEADERS = {"Accept": "application/jsonl", "MPT-Streaming": "true"}
CHANGE_EVENTS = ("created", "updated")  # the audit events an incremental read follows

ReadMode = Literal["auto", "streaming", "concurrent", "sequential"]
Row = dict[str, Any]


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer`` on every request; the token never shows in a repr."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(********)"


@dataclass
class ReadReport:
    """What one collection read did, for logs, metadata and the final completeness check."""

    resource: str
    mode: str = ""
    reported_total: int | None = None
    final_count: int | None = None
    rows: int = 0
    duplicates_dropped: int = 0
    gaps_repaired: int = 0
    resumed_streams: int = 0
    hedged_pages: int = 0  # pages asked for twice because they lagged behind the others
    changed: bool = False  # the server's totals moved, or rows repeated, during the read
    total_given: bool = True  # False when the server answered ``total: null``

    @property
    def complete(self) -> bool:
        """True when the rows read are shown to cover the server's count at the end of the read.

        Without a count from the server (``total: null``) completeness cannot be shown: False,
        so nothing is concluded from rows that were not read (e.g. marked deleted).
        """
        return self.final_count is not None and self.rows >= self.final_count

    @property
    def completeness(self) -> str:
        """The completeness check in words, for logs and metadata."""
        if self.final_count is None:
            return f"unverified: the server gave no total ({self.rows} rows read to the end)"
        if self.rows >= self.final_count:
            return f"complete: {self.rows} rows, the server counts {self.final_count}"
        return f"incomplete: {self.rows} rows read, the server counts {self.final_count}"


@dataclass
class _Segment:
    first: str
    last: str
    rows: int


@dataclass
class _Emitter:
    """Keeps the yielded id stream strictly increasing and remembers page boundaries."""

    report: ReadReport
    last_id: str | None = None
    segments: list[_Segment] = field(default_factory=list)

    def take(self, rows: Iterable[Row]) -> list[Row]:
        fresh = []
        for row in rows:
            identifier = row["id"]
            if self.last_id is not None and identifier <= self.last_id:
                self.report.duplicates_dropped += 1
                self.report.changed = True
                continue
            fresh.append(row)
            self.last_id = identifier
        if fresh:
            self.segments.append(_Segment(fresh[0]["id"], fresh[-1]["id"], len(fresh)))
            self.report.rows += len(fresh)
        return fresh


class MarketplaceClient:
    """Reads and writes the Marketplace Notifications API."""

    def __init__(
        self,
        settings: MarketplaceSettings,
        *,
        limits: ClientLimits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        read_mode: ReadMode = "auto",
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.settings = settings
        self.read_mode = read_mode
        self.chunk_bytes = chunk_bytes
        self.http = ResilientClient(
            settings.base_url + API_PREFIX,
            auth=BearerAuth(settings.token.reveal()),
            headers={"User-Agent": "notifsync"},
            limits=limits,
            transport=transport,
        )

    async def __aenter__(self) -> MarketplaceClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    # -- reads ------------------------------------------------------------------------------

    async def count(self, resource: str, filter: rql.Rql | None = None) -> int | None:
        """The server's own count (``limit=0``) of a filtered collection; None if it gave none."""
        body = await self._page(resource, filter, ("audit",), offset=0, limit=0)
        return _total(body)

    async def latest_change(self, resource: str) -> str | None:
        """The newest ``audit.created.at`` or ``audit.updated.at`` in a collection, if any.

        An event that has not happened is absent from ``audit`` (a record never updated has no
        ``audit.updated``), so the high-water mark of changes is the later of the two.
        """
        newest: list[str] = []
        for event in CHANGE_EVENTS:
            at = f"audit.{event}.at"
            query = rql.build_query_string(
                rql.ne(at, rql.NULL), select=("audit",), order=(f"-{at}",), limit=1
            )
            body = await self.http.send_json(
                "GET", f"/{resource}", params=query, safe_to_retry=True
            )
            rows = body.get("data") or []
            stamp = _audit_at(rows[0], event) if rows else None
            if stamp is not None:
                newest.append(stamp)
        return max(newest, key=_instant) if newest else None

    async def get(self, resource: str, identifier: str) -> Row:
        """One item by id."""
        _check_resource(resource)
        return await self.http.send_json("GET", f"/{resource}/{identifier}", safe_to_retry=True)

    async def read(
        self,
        resource: str,
        *,
        filter: rql.Rql | None = None,
        select: Sequence[str] = ("audit",),
        mode: ReadMode | None = None,
        chunk_size: int = 5000,
        report: ReadReport | None = None,
    ) -> AsyncIterator[list[Row]]:
        """Every row of a collection, ordered by id, in chunks of at most ``chunk_size``.

        ``mode`` defaults to the client's ``read_mode`` ("auto": stream when the server can).
        """
        _check_resource(resource)
        mode = mode or self.read_mode
        report = report if report is not None else ReadReport(resource)
        emitter = _Emitter(report)
        if mode in ("auto", "streaming"):
            pages = self._streamed(resource, filter, select, report)
        else:
            pages = self._paged(resource, filter, select, report, sequential=mode == "sequential")
        buffer: list[Row] = []
        async for page in pages:
            buffer.extend(emitter.take(page))
            if len(buffer) >= chunk_size:
                yield buffer
                buffer = []
        async for page in self._repair(resource, filter, select, emitter):
            buffer.extend(page)
            if len(buffer) >= chunk_size:
                yield buffer
                buffer = []
        if buffer:
            yield buffer

    async def read_lines(
        self,
        resource: str,
        *,
        filter: rql.Rql | None = None,
        select: Sequence[str] = ("audit",),
        mode: ReadMode | None = None,
        chunk_bytes: int | None = None,
        report: ReadReport | None = None,
    ) -> AsyncIterator[bytes]:
        """``read`` as JSON lines: chunks of about ``chunk_bytes`` (the client's by default),
        one record per line, ids increasing, with the same completeness check and gap repair.

        Streaming hands on the server's own bytes, unparsed (only each block's first and last
        line are read, for their ids); pages are re-encoded one line per record.
        """
        _check_resource(resource)
        mode = mode or self.read_mode
        report = report if report is not None else ReadReport(resource)
        emitter = _Emitter(report)
        chunk_bytes = chunk_bytes or self.chunk_bytes
        buffer = bytearray()
        if mode in ("auto", "streaming"):
            blocks = self._streamed_lines(resource, filter, select, report, emitter)
        else:
            pages = self._paged(resource, filter, select, report, sequential=mode == "sequential")
            blocks = _encoded_pages(pages, emitter)
        async for block in blocks:
            buffer += block
            if len(buffer) >= chunk_bytes:
                yield bytes(buffer)
                buffer.clear()
        async for page in self._repair(resource, filter, select, emitter):
            buffer += _lines(page)
        if buffer:
            yield bytes(buffer)

    async def _streamed_lines(
        self,
        resource: str,
        filter: rql.Rql | None,
        select: Sequence[str],
        report: ReadReport,
        emitter: _Emitter,
    ) -> AsyncIterator[bytes]:
        while True:
            last_id = emitter.last_id
            resume = filter if last_id is None else _and(filter, rql.gt("id", last_id))
            query = rql.build_query_string(resume, select=select, order=("id",))
            try:
                async with self.http.stream(
                    "GET", f"/{resource}", params=query, headers=STREAM_HEADERS
                ) as response:
                    if response.headers.get("MPT-Streaming", "").lower() != "true":
                        break  # the server did not stream; page instead
                    report.mode = "streaming"
                    tail = b""
                    # One stream is one snapshot, with no gap inside it: its blocks make one
                    # segment, so gap repair probes only the seams between streams.
                    opened = len(emitter.segments)
                    async for data in response.aiter_bytes():
                        cut = data.rfind(b"\n") + 1
                        if cut == 0:
                            tail += data
                            continue
                        block = _take_lines(emitter, tail + data[:cut])
                        tail = data[cut:]
                        _join_segments(emitter, opened)
                        if block:
                            yield block
                    if tail.strip():
                        # A body that ends without a newline may have been cut short: its
                        # last line is only taken when it is a whole JSON object.
                        loads_line(tail.decode("utf-8", "replace"))
                        block = _take_lines(emitter, tail + b"\n")
                        if block:
                            yield block
                    return
            except TransportError as exc:
                if isinstance(exc, ConnectionFailedError):
                    raise  # no connection at all was already retried by the HTTP client
                # A cut stream resumes after the last complete line; a partial one is dropped.
                report.resumed_streams += 1
                report.changed = True  # two snapshots now: check the seams
                if report.resumed_streams > self.http.limits.max_attempts:
                    raise
                log.warning("stream of %s interrupted (%s); resuming", resource, exc)
        pages = self._paged(resource, filter, select, report, sequential=False)
        async for block in _encoded_pages(pages, emitter):
            yield block

    async def _page(
        self,
        resource: str,
        filter: rql.Rql | None,
        select: Sequence[str],
        *,
        offset: int,
        limit: int,
    ) -> Any:
        query = rql.build_query_string(
            filter, select=select, order=("id",), limit=limit, offset=offset
        )
        return await self.http.send_json("GET", f"/{resource}", params=query, safe_to_retry=True)

    async def _paged(
        self,
        resource: str,
        filter: rql.Rql | None,
        select: Sequence[str],
        report: ReadReport,
        *,
        sequential: bool,
    ) -> AsyncIterator[list[Row]]:
        report.mode = report.mode or ("sequential" if sequential else "concurrent")
        window = self.http.limits.max_concurrency * 2
        paging = (
            OffsetPaging(PAGE_SIZE, window=1, lookahead=1, hedge_after=None)
            if sequential
            else OffsetPaging(PAGE_SIZE, window=window, lookahead=window * 4, hedge_after=window)
        )

        async def fetch(offset: int, limit: int) -> Page:
            body = await self._page(resource, filter, select, offset=offset, limit=limit)
            return Page(body["data"], _total(body))

        try:
            async for rows in paging.pages(fetch):
                report.reported_total = paging.stats.total
                yield rows
        finally:
            report.total_given = paging.stats.total is not None
            report.hedged_pages += paging.stats.hedged
            if paging.stats.total_changed:
                report.changed = True

    async def _streamed(
        self,
        resource: str,
        filter: rql.Rql | None,
        select: Sequence[str],
        report: ReadReport,
    ) -> AsyncIterator[list[Row]]:
        streaming = StreamPaging(
            batch_rows=PAGE_SIZE * 10, max_resumes=self.http.limits.max_attempts
        )

        @asynccontextmanager
        async def open_stream(after: str | None) -> AsyncIterator[AsyncIterator[str] | None]:
            resume = filter if after is None else _and(filter, rql.gt("id", after))
            if after is not None:
                report.resumed_streams += 1
                report.changed = True  # two snapshots now: check the seams
            query = rql.build_query_string(resume, select=select, order=("id",))
            async with self.http.stream(
                "GET", f"/{resource}", params=query, headers=STREAM_HEADERS
            ) as response:
                if response.headers.get("MPT-Streaming", "").lower() != "true":
                    yield None  # the server did not stream: page instead
                    return
                report.mode = "streaming"
                yield response.aiter_lines()

        async for rows in streaming.pages(open_stream):
            yield rows
        if streaming.resumed > report.resumed_streams:
            # Cut before any row arrived: resumed from the start, still a second snapshot.
            report.resumed_streams = streaming.resumed
            report.changed = True
        if streaming.offered is False:
            async for rows in self._paged(resource, filter, select, report, sequential=False):
                yield rows

    async def _repair(
        self, resource: str, filter: rql.Rql | None, select: Sequence[str], emitter: _Emitter
    ) -> AsyncIterator[list[Row]]:
        """Find rows the read skipped (they shifted between pages) and fetch just those."""
        report = emitter.report
        report.final_count = await self.count(resource, filter)
        if report.final_count is None and not report.changed:
            return  # no count to check against, and nothing seen moving: nothing to probe
        if not report.changed and report.final_count == report.rows:
            return
        # The data moved during the read. Totals cannot locate skipped rows (a deleted row
        # already read hides one skipped), so every gap between the pages read is probed: a
        # gap lies strictly between two ranges read, so any row in it was missed.
        segments = emitter.segments
        lows: list[str | None] = [None, *(s.last for s in segments)]
        highs: list[str | None] = [*(s.first for s in segments), None]
        found = await asyncio.gather(
            *(
                self._rows_between(resource, filter, select, lo, hi)
                for lo, hi in zip(lows, highs, strict=True)
            )
        )
        # Offset pages of a range can repeat a row if rows move meanwhile: each id once (the
        # later copy), as the read promises.
        repaired = [row for rows in found for row in rows]
        fresh = sorted({row["id"]: row for row in repaired}.values(), key=lambda r: r["id"])
        report.duplicates_dropped += len(repaired) - len(fresh)
        report.gaps_repaired += len(fresh)
        report.rows += len(fresh)
        if fresh:
            yield fresh

    async def _rows_between(
        self,
        resource: str,
        filter: rql.Rql | None,
        select: Sequence[str],
        low: str | None,
        high: str | None,
    ) -> list[Row]:
        """Rows with ``low < id < high`` (a count first: almost every gap is empty)."""
        bounds = []
        if low is not None:
            bounds.append(rql.gt("id", low))
        if high is not None:
            bounds.append(rql.lt("id", high))
        range_filter = _and(filter, *bounds)
        if await self.count(resource, range_filter) == 0:  # None (no count given): look
            return []
        rows: list[Row] = []
        while True:
            body = await self._page(
                resource, range_filter, select, offset=len(rows), limit=PAGE_SIZE
            )
            rows.extend(body["data"])
            if len(body["data"]) < PAGE_SIZE:
                return rows

    # -- contact writes ---------------------------------------------------------------------

    async def create_contact(
        self, email: str, name: str | None = None, opt_outs: Sequence[str] = ()
    ) -> Row:
        """POST /contacts; not safe to repeat: an unknown outcome raises AmbiguousOutcomeError."""
        body = _contact_body(email, name, opt_outs)
        return await self.http.send_json("POST", "/contacts", json=body, safe_to_retry=False)

    async def find_contact_by_email(self, email: str) -> Row | None:
        """The contact with this email (case-insensitive), if any."""
        query = rql.build_query_string(
            rql.ilike("email", rql.escape_wildcards(email.strip())), select=("audit",), limit=2
        )
        body = await self.http.send_json("GET", "/contacts", params=query, safe_to_retry=True)
        matches = [r for r in body["data"] if r["email"].casefold() == email.strip().casefold()]
        return matches[0] if matches else None

    async def update_contact(
        self, identifier: str, email: str, name: str | None, opt_outs: Sequence[str] = ()
    ) -> Row:
        """PUT /contacts/{id}: the same body twice gives the same contact, so it is retried."""
        body = _contact_body(email, name, opt_outs)
        async with _gone_if_not_found():
            return await self.http.send_json(
                "PUT", f"/contacts/{identifier}", json=body, safe_to_retry=True
            )

    async def block_contact(self, identifier: str) -> Row:
        """POST /contacts/{id}/block; already blocked counts as done."""
        contact, _ = await self.set_contact_state(identifier, blocked=True)
        return contact

    async def unblock_contact(self, identifier: str) -> Row:
        """POST /contacts/{id}/unblock; already active counts as done."""
        contact, _ = await self.set_contact_state(identifier, blocked=False)
        return contact

    async def set_contact_state(self, identifier: str, *, blocked: bool) -> tuple[Row, bool]:
        """Block or unblock; returns the contact and whether this call changed its state."""
        action, target = ("block", "Blocked") if blocked else ("unblock", "Active")
        # Repeating a state change reaches the same end state, so it is retried; a conflict
        # may be our own earlier attempt having landed, so check the state before failing.
        try:
            async with _gone_if_not_found():
                contact = await self.http.send_json(
                    "POST", f"/contacts/{identifier}/{action}", safe_to_retry=True
                )
            return contact, True
        except ConflictError:
            async with _gone_if_not_found():
                contact = await self.get("contacts", identifier)
            if contact.get("status") == target:
                return contact, False
            raise

    async def delete_contact(self, identifier: str) -> None:
        """DELETE /contacts/{id}."""
        await self.http.send("DELETE", f"/contacts/{identifier}", safe_to_retry=True)

    async def create_batch(
        self,
        category_id: str,
        subject: str,
        body: str,
        contacts: Sequence[dict[str, str]],
        *,
        account: dict[str, Any] | None = None,
        buyer: dict[str, Any] | None = None,
        attachments: Sequence[BatchAttachment] = (),
    ) -> Row:
        """POST /batches (not safe to repeat: a retry would send the email twice).

        Sent as JSON, as the OpenAPI document says; with attachments as multipart/form-data,
        as the official SDK does: a ``batch`` JSON part and one ``attachment`` part per file.
        """
        payload: dict[str, Any] = {
            "category": {"id": category_id},
            "subject": subject,
            "body": body,
            "contacts": list(contacts),
        }
        if account is not None:
            payload["account"] = account
        if buyer is not None:
            payload["buyer"] = buyer
        if not attachments:
            return await self.http.send_json("POST", "/batches", json=payload, safe_to_retry=False)
        content, content_type = _multipart(payload, attachments)
        return await self.http.send_json(
            "POST",
            "/batches",
            content=content,
            headers={"Content-Type": content_type},
            safe_to_retry=False,
        )


def _lines(rows: Iterable[Row]) -> bytes:
    """Records as JSON lines (each line ends with a newline)."""
    return b"".join([orjson.dumps(row) + b"\n" for row in rows])


async def _encoded_pages(
    pages: AsyncIterator[list[Row]], emitter: _Emitter
) -> AsyncIterator[bytes]:
    async for page in pages:
        fresh = emitter.take(page)
        if fresh:
            yield _lines(fresh)


def _take_lines(emitter: _Emitter, block: bytes) -> bytes:
    """The lines of ``block`` the emitter has not seen (ids above its last), recorded as one
    segment. A stream is ordered by id, so only the block's ends are parsed, unless its first
    id is not new (then every line is checked)."""
    if b"\n\n" in block or block.startswith(b"\n") or b"\r" in block:
        block = b"".join(line + b"\n" for line in block.splitlines() if line.strip())
    if not block:
        return b""
    first = block[: block.index(b"\n")]
    start = len(block) - 1
    last = block[block.rfind(b"\n", 0, start) + 1 : start]
    report = emitter.report
    if emitter.last_id is not None and _loads_id(first) <= emitter.last_id:
        return _lines(emitter.take([loads_line(line.decode()) for line in block.splitlines()]))
    rows = block.count(b"\n")
    first_id, last_id = _loads_id(first), _loads_id(last)
    emitter.segments.append(_Segment(first_id, last_id, rows))
    emitter.last_id = last_id
    report.rows += rows
    return block


def _join_segments(emitter: _Emitter, first: int) -> None:
    segments = emitter.segments
    while len(segments) > first + 1:
        last = segments.pop()
        segments[-1].last = last.last
        segments[-1].rows += last.rows


def _loads_id(line: bytes) -> str:
    try:
        return orjson.loads(line)["id"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise TransportError("stream delivered a line that is not a JSON record") from exc


@dataclass(frozen=True)
class BatchAttachment:
    """A file to send with a batch."""

    filename: str
    data: bytes
    content_type: str = "application/octet-stream"


def _multipart(payload: Row, attachments: Sequence[BatchAttachment]) -> tuple[bytes, str]:
    """The body and Content-Type of a multipart batch, encoded by httpx."""
    files = [("batch", (None, orjson.dumps(payload), "application/json"))]
    files += [("attachment", (a.filename, a.data, a.content_type)) for a in attachments]
    request = httpx.Request("POST", "http://multipart.invalid/", files=files)
    return request.read(), request.headers["Content-Type"]


@asynccontextmanager
async def _gone_if_not_found() -> AsyncIterator[None]:
    """A contact write's "not found" (404, or the 400 that block / unblock / update answer for
    an unknown id) becomes ``ContactGoneError``: the contact was deleted, not a bad request."""
    try:
        yield
    except (NotFoundError, ValidationError) as exc:
        if isinstance(exc, NotFoundError) or exc.problem.says_not_found:
            raise ContactGoneError(exc.method, exc.path, exc.problem) from exc
        raise


def changed_since(since: datetime) -> rql.Rql:
    """Records created or updated after ``since`` (a never-updated record has no ``updated``)."""
    return rql.or_(*(rql.gt(f"audit.{event}.at", since) for event in CHANGE_EVENTS))


def _audit_at(record: Row, event: str) -> str | None:
    value = ((record.get("audit") or {}).get(event) or {}).get("at")
    return value if isinstance(value, str) else None


def _instant(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _total(body: Any) -> int | None:
    """``$meta.pagination.total``: nullable in the OpenAPI document."""
    total = body["$meta"]["pagination"].get("total")
    return None if total is None else int(total)


def _contact_body(email: str, name: str | None, opt_outs: Sequence[str]) -> dict[str, Any]:
    return {"email": email, "name": name, "optOuts": [{"id": c} for c in opt_outs]}


def _and(*parts: rql.Rql | None) -> rql.Rql | None:
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else rql.and_(*present)


def _check_resource(resource: str) -> None:
    if resource not in RESOURCES:
        raise ValueError(f"unknown resource {resource!r}; known: {', '.join(RESOURCES)}")
