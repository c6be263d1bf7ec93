"""Async client of the Marketplace Notifications API: complete, fast collection reads and
contact writes.

Reading a collection (``read``) orders by ``id`` and yields rows in chunks, never all at once:

- **streaming** when the server confirms it (``MPT-Streaming: true`` echoed); an interrupted
  stream resumes after the last id received;
- **concurrent paging** otherwise: the first page's ``total`` says how many pages there are,
  and a bounded window of pages is in flight at once, yielded in order;
- **sequential paging** on request (the baseline the benchmark compares against).

Rows that shift between pages while data changes are caught both ways: a repeated row has an
id not above the last one yielded and is dropped; a skipped row is found by comparing the
server's count (``limit=0``) over id ranges with what was yielded, narrowing down to the gaps
between pages and fetching just those.

Write safety: PUT, block, unblock and DELETE reach the same end state when repeated, so they
are retried; POST create is not, and a create whose outcome is unknown raises
``AmbiguousOutcomeError`` (look the email up before sending it again).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import orjson

from connector.errors import ConflictError, ConnectionFailedError, TransportError
from connector.http import ClientLimits, ResilientClient
from connector.marketplace import rql
from connector.settings import MarketplaceSettings

log = logging.getLogger(__name__)

API_PREFIX = "/public/v1/notifications"
RESOURCES = ("contacts", "categories", "batches", "messages")
PAGE_SIZE = 100  # the server caps limit at 100
STREAM_HEADERS = {"Accept": "application/jsonl", "MPT-Streaming": "true"}

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
    changed: bool = False  # the server's totals moved, or rows repeated, during the read

    @property
    def complete(self) -> bool:
        """True when the rows read cover the server's count at the end of the read."""
        return self.final_count is None or self.rows >= self.final_count


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
    ) -> None:
        self.settings = settings
        self.read_mode = read_mode
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

    async def count(self, resource: str, filter: rql.Rql | None = None) -> int:
        """The server's own count (``limit=0``) of a filtered collection."""
        body = await self._page(resource, filter, ("audit",), offset=0, limit=0)
        return int(body["$meta"]["pagination"]["total"])

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
        first = await self._page(resource, filter, select, offset=0, limit=PAGE_SIZE)
        total = int(first["$meta"]["pagination"]["total"])
        report.reported_total = total
        yield first["data"]
        window = 1 if sequential else self.http.limits.max_concurrency * 2
        in_flight: deque[asyncio.Task[Any]] = deque()
        offsets = iter(range(PAGE_SIZE, total, PAGE_SIZE))
        try:
            for offset in offsets:
                in_flight.append(
                    asyncio.create_task(
                        self._page(resource, filter, select, offset=offset, limit=PAGE_SIZE)
                    )
                )
                if len(in_flight) >= window:
                    yield _checked(await in_flight.popleft(), total, report)
            while in_flight:
                yield _checked(await in_flight.popleft(), total, report)
        finally:
            for task in in_flight:
                task.cancel()

    async def _streamed(
        self,
        resource: str,
        filter: rql.Rql | None,
        select: Sequence[str],
        report: ReadReport,
    ) -> AsyncIterator[list[Row]]:
        last_id: str | None = None
        while True:
            batch: list[Row] = []
            resume = filter if last_id is None else _and(filter, rql.gt("id", last_id))
            query = rql.build_query_string(resume, select=select, order=("id",))
            try:
                async with self.http.stream(
                    "GET", f"/{resource}", params=query, headers=STREAM_HEADERS
                ) as response:
                    if response.headers.get("MPT-Streaming", "").lower() != "true":
                        # The server did not stream; page instead.
                        break
                    report.mode = "streaming"
                    async for line in response.aiter_lines():
                        if not line:
                            continue
                        row = _loads(line)
                        batch.append(row)
                        if len(batch) >= PAGE_SIZE * 10:
                            last_id = batch[-1]["id"]
                            yield batch
                            batch = []
                    if batch:
                        last_id = batch[-1]["id"]
                        yield batch
                    return
            except TransportError as exc:
                # No connection at all was already retried by the HTTP client: give up.
                if isinstance(exc, ConnectionFailedError):
                    raise
                # A cut stream resumes after the last complete row; a partial last line is
                # dropped (it may be a truncated object).
                report.resumed_streams += 1
                report.changed = True  # two snapshots now: check the seams
                if report.resumed_streams > self.http.limits.max_attempts:
                    raise
                log.warning("stream of %s interrupted (%s); resuming", resource, exc)
                if batch:
                    last_id = batch[-1]["id"]
                    yield batch
        async for page in self._paged(resource, filter, select, report, sequential=False):
            yield page

    async def _repair(
        self, resource: str, filter: rql.Rql | None, select: Sequence[str], emitter: _Emitter
    ) -> AsyncIterator[list[Row]]:
        """Find rows the read skipped (they shifted between pages) and fetch just those."""
        report = emitter.report
        report.final_count = await self.count(resource, filter)
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
        fresh = sorted((row for rows in found for row in rows), key=lambda r: r["id"])
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
        if await self.count(resource, range_filter) == 0:
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
            contact = await self.http.send_json(
                "POST", f"/contacts/{identifier}/{action}", safe_to_retry=True
            )
            return contact, True
        except ConflictError:
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
    ) -> Row:
        """POST /batches (not safe to repeat: a retry would send the email twice)."""
        payload = {
            "category": {"id": category_id},
            "subject": subject,
            "body": body,
            "contacts": list(contacts),
        }
        return await self.http.send_json("POST", "/batches", json=payload, safe_to_retry=False)


def _checked(body: Any, first_total: int, report: ReadReport) -> list[Row]:
    """A page's rows, noting when its total says the collection changed since the first."""
    if body["$meta"]["pagination"]["total"] != first_total:
        report.changed = True
    return body["data"]


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


def _loads(line: str) -> Row:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise TransportError("stream delivered a line that is not valid JSON") from exc
