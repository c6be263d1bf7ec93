"""The sandbox's Marketplace Notifications API routes, under ``/public/v1/notifications``.

Lists answer ``{"$meta": {"pagination": ..., "omitted": [...]}, "data": [...]}`` with RQL in the
query string, ``limit`` capped at 100 and ``limit=0`` for a count; streaming mode answers the
whole filtered result as JSON lines. ``audit`` is left out of list items unless selected, as
the platform does, and ``$meta.omitted`` says so.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Iterable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from sandbox.behaviour import Behaviour
from sandbox.marketplace.rql import (
    FieldSet,
    ParsedQuery,
    RqlSyntaxError,
    first_records,
    parse_query,
)
from sandbox.marketplace.store import Attachment, MarketplaceStore, Record, StoreError
from sandbox.problems import problem_response

PREFIX = "/public/v1/notifications"
STREAM_CHUNK = 500
DEFAULT_LIMIT = 100
OMITTED_BY_DEFAULT = ("audit",)

_AUDIT = ("audit", "audit.created", "audit.created.at", "audit.updated", "audit.updated.at")
_CATEGORY_REF = ("id", "name", "shortDescription")

FIELDS: dict[str, FieldSet] = {
    "contacts": FieldSet.from_paths(
        ["id", "name", "email", "status", "blockedReason", "user", "user.id", "user.name", *_AUDIT],
        collections={"optOuts": _CATEGORY_REF},
    ),
    "categories": FieldSet.from_paths(
        [
            "id",
            "name",
            "shortDescription",
            "description",
            "optOutAllowed",
            "status",
            "icon",
            *_AUDIT,
            *(
                f"statistics.{window}.{count}"
                for window in ("today", "week", "month")
                for count in ("sent", "bounced", "complained", "discarded", "failed", "total")
            ),
        ],
    ),
    "batches": FieldSet.from_paths(
        [
            *("id", "subject", "body", "category.id", "category.name"),
            *("account.id", "account.name", *_AUDIT),
        ],
        collections={"attachments": ("id", "name", "filename", "contentType", "size")},
    ),
    "messages": FieldSet.from_paths(
        [
            "id",
            "status",
            "subject",
            "body",
            "batch.id",
            "batch.subject",
            "contact.id",
            "contact.email",
            "contact.name",
            "category.id",
            "category.name",
            "account.id",
            "account.name",
            *_AUDIT,
        ]
    ),
}


class MarketplaceApi:
    """Request handlers bound to one store and one accepted token."""

    def __init__(
        self, store: MarketplaceStore, token: str, *, behaviour: Behaviour | None = None
    ) -> None:
        self.store = store
        self._token = token.encode()
        self._behaviour = behaviour

    def routes(self) -> list[BaseRoute]:
        """Starlette routes for every notifications endpoint the sandbox serves."""
        p = PREFIX
        return [
            Route(f"{p}/contacts", self._guard(self.list_contacts), methods=["GET"]),
            Route(f"{p}/contacts", self._guard(self.create_contact), methods=["POST"]),
            Route(f"{p}/contacts/{{id}}", self._guard(self.get_contact), methods=["GET"]),
            Route(f"{p}/contacts/{{id}}", self._guard(self.update_contact), methods=["PUT"]),
            Route(f"{p}/contacts/{{id}}", self._guard(self.delete_contact), methods=["DELETE"]),
            Route(f"{p}/contacts/{{id}}/block", self._guard(self.block), methods=["POST"]),
            Route(f"{p}/contacts/{{id}}/unblock", self._guard(self.unblock), methods=["POST"]),
            Route(f"{p}/categories", self._guard(self.list_categories), methods=["GET"]),
            Route(f"{p}/categories/{{id}}", self._guard(self.get_category), methods=["GET"]),
            Route(f"{p}/batches", self._guard(self.list_batches), methods=["GET"]),
            Route(f"{p}/batches", self._guard(self.create_batch), methods=["POST"]),
            Route(f"{p}/batches/{{id}}", self._guard(self.get_batch), methods=["GET"]),
            Route(f"{p}/messages", self._guard(self.list_messages), methods=["GET"]),
            Route(f"{p}/messages/{{id}}", self._guard(self.get_message), methods=["GET"]),
        ]

    def _guard(self, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self._token):
                return problem_response(401, "Unauthorized", "A valid bearer token is required.")
            try:
                return await handler(request)
            except RqlSyntaxError as exc:
                return problem_response(400, "Bad Request", str(exc))
            except StoreError as exc:
                return problem_response(exc.status, exc.title, exc.detail, errors=exc.errors)
            except ClientDisconnect:
                # The client went away mid-request (killed, timed out): nothing to answer,
                # and not worth a traceback in the sandbox's log.
                return Response(status_code=499)

        return endpoint

    # -- lists ------------------------------------------------------------------------------

    async def list_contacts(self, request: Request) -> Response:
        return self._list(request, "contacts")

    async def list_batches(self, request: Request) -> Response:
        return self._list(request, "batches")

    async def list_messages(self, request: Request) -> Response:
        return self._list(request, "messages")

    async def list_categories(self, request: Request) -> Response:
        return self._list(request, "categories", self.store.category_with_statistics)

    def _list(
        self, request: Request, resource: str, present: Callable[[Record], Record] | None = None
    ) -> Response:
        query = parse_query(
            request.url.query, FIELDS[resource], max_limit=100, default_limit=DEFAULT_LIMIT
        )
        collection = self.store.collection(resource)
        stream = _wants_stream(request)
        limit = DEFAULT_LIMIT if query.limit is None else query.limit
        with self.store.lock:
            total, page = collection.query(
                query.filter_text,
                query.predicate,
                query.order,
                first_records,
                None if stream else query.offset + limit,
            )
            rows = page(0, total) if stream else page(query.offset, limit)
        shape = _Shape(query)
        if present is not None:
            rows = [present(r) for r in rows]
        if stream:
            return StreamingResponse(
                _json_lines(rows, shape),
                media_type="application/jsonl",
                headers={"MPT-Streaming": "true"},
            )
        body = {
            "$meta": {
                "pagination": {
                    "offset": query.offset,
                    "limit": limit,
                    # The total is nullable in the OpenAPI document; a switch answers null.
                    "total": None if self._behaviour and self._behaviour.null_totals else total,
                },
                "omitted": list(shape.omitted),
            },
            "data": [shape.apply(r) for r in rows],
        }
        return _json(body)

    # -- items ------------------------------------------------------------------------------

    async def get_contact(self, request: Request) -> Response:
        return self._item(request, "contacts")

    async def get_batch(self, request: Request) -> Response:
        return self._item(request, "batches")

    async def get_message(self, request: Request) -> Response:
        return self._item(request, "messages")

    async def get_category(self, request: Request) -> Response:
        return self._item(request, "categories", self.store.category_with_statistics)

    def _item(
        self, request: Request, resource: str, present: Callable[[Record], Record] | None = None
    ) -> Response:
        identifier = request.path_params["id"]
        record = self.store.collection(resource).get(identifier)
        if record is None:
            noun = resource[:-1].capitalize() if resource != "categories" else "Category"
            raise StoreError(404, "Not Found", f"{noun} {identifier} was not found.")
        return _json(present(record) if present else record)

    # -- writes -----------------------------------------------------------------------------

    async def create_contact(self, request: Request) -> Response:
        contact = self.store.create_contact(await _body(request))
        return _json(contact, status=201)

    async def update_contact(self, request: Request) -> Response:
        contact = self.store.update_contact(request.path_params["id"], await _body(request))
        return _json(contact)

    async def delete_contact(self, request: Request) -> Response:
        self.store.delete_contact(request.path_params["id"])
        return Response(status_code=204)

    async def block(self, request: Request) -> Response:
        return _json(self.store.set_blocked(request.path_params["id"], True))

    async def unblock(self, request: Request) -> Response:
        return _json(self.store.set_blocked(request.path_params["id"], False))

    async def create_batch(self, request: Request) -> Response:
        # The OpenAPI document says JSON; the official SDK sends multipart/form-data (a
        # "batch" JSON part and optional "attachment" file parts). Both are accepted.
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            body, attachments = _batch_form(request.headers["content-type"], await request.body())
        else:
            body, attachments = await _body(request), []
        return _json(self.store.create_batch(body, attachments), status=201)


class _Shape:
    """Which top-level fields a list item shows, from the defaults and ``select``."""

    def __init__(self, query: ParsedQuery) -> None:
        omitted = [f for f in OMITTED_BY_DEFAULT if f not in _tops(query.select_add)]
        self.drop = frozenset([*omitted, *_tops(query.select_remove)])
        self.omitted = tuple(sorted(self.drop))

    def apply(self, record: Record) -> Record:
        if not self.drop:
            return record
        return {k: v for k, v in record.items() if k not in self.drop}


def _tops(paths: Iterable[str]) -> list[str]:
    return [p.split(".", 1)[0] for p in paths]


def _wants_stream(request: Request) -> bool:
    return request.headers.get(
        "mpt-streaming", ""
    ).lower() == "true" and "application/jsonl" in request.headers.get("accept", "")


async def _json_lines(rows: list[Record], shape: _Shape) -> AsyncIterator[bytes]:
    dumps = orjson.dumps
    for start in range(0, len(rows), STREAM_CHUNK):
        chunk = rows[start : start + STREAM_CHUNK]
        yield b"".join(dumps(shape.apply(r)) + b"\n" for r in chunk)


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise StoreError(400, "Bad Request", f"The request body is not valid JSON: {exc}") from exc


def _batch_form(content_type: str, raw: bytes) -> tuple[Any, list[Attachment]]:
    """The ``batch`` JSON part and the ``attachment`` file parts of a multipart body."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
    )
    if not message.is_multipart():
        raise StoreError(400, "Bad Request", "The multipart body could not be read.")
    batch: Any = None
    attachments: list[Attachment] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if name == "batch":
            try:
                batch = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise StoreError(400, "Bad Request", f"The batch part is not JSON: {exc}") from exc
        elif name == "attachment":
            attachments.append(
                Attachment(
                    filename=part.get_filename() or "attachment",
                    content_type=part.get_content_type(),
                    data=data,
                )
            )
    if batch is None:
        raise StoreError(
            400, "Bad Request", "A multipart batch needs a 'batch' part holding the JSON body."
        )
    return batch, attachments


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
