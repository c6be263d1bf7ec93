"""The EviNotice sandbox's HTTP face: ``/v2/EviNotice/Batches`` and the evidence query
(``POST /api/v2/EviNotice/Query``) over
``EviNoticeStore``, behind HTTP Basic authentication, with problem-details errors and the literal
``QUERY`` method.

Behaviour follows ``../shared/api/README.md``; decisions where the vendor's pages are silent:

- ``QUERY`` takes its parameters from the query string, a JSON object body, or both (body wins);
  names match case-insensitively.
- The list cursor is a position (``{"position": n}`` in Base64), as the vendor's example shows.
- A PATCH the service refuses answers ``400`` (the page lists only 200, 400 and 404): a revert to
  ``Draft`` or a new date once processing started, an option changed on a batch that is not a
  ``Draft``. Changing the body, attachments or recipients of a non-Draft batch is a ``409``.
  A PATCH that changes nothing is a ``200`` no-op, which makes a repeated PATCH safe.
- Submitting needs a subject, a body and at least one recipient (``400`` otherwise).
- The body is raw text whatever the content type (``PUT .../Body``); the recipients text may be
  sent raw or as a JSON string.
- Unknown fields in a create or PATCH body are a ``400`` (the real API may ignore them; the sandbox
  is strict so client typos show up).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sandbox.evinotice.evidence import EVIDENCE_PATH
from sandbox.evinotice.payloads import (
    BASE_PATH,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    SandboxProblem,
    bad,
)
from sandbox.evinotice.store import EviNoticeStore


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
            raise bad("body", "A JSON body is required.")
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad("body", "The body is not valid JSON.") from None


async def _text(request: Request, field_name: str) -> str:
    """A text payload sent raw (``text/*``) or as a JSON string."""
    content_type = request.headers.get("content-type", "").lower()
    if "json" in content_type:
        value = await _json(request)
        if isinstance(value, dict) and isinstance(value.get(field_name), str):
            return value[field_name]
        if not isinstance(value, str):
            raise bad(field_name, f"Send {field_name} as a JSON string or as text.")
        return value
    raw = await request.body()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad(field_name, "The body is not UTF-8 text.") from None


def _flag(request: Request, name: str) -> bool:
    value = _param(dict(request.query_params), name)
    if value is None:
        return False
    lowered = str(value).lower()
    if lowered not in ("true", "false"):
        raise bad(name, "Must be true or false.")
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
        raise bad(name, "Must be an integer.")
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise bad(name, "Must be an integer.") from None


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
                raise bad("body", "Must be a JSON object.")
            new_id = store.create_batch(payload, submitter=username)
            return _JSONResponse({"BatchId": new_id})
        return await list_batches(request)

    async def list_batches(request: Request) -> Response:
        params: dict[str, Any] = dict(request.query_params)
        body = await _json(request, required=False)
        if body is not None:
            if not isinstance(body, dict):
                raise bad("body", "QUERY parameters must be a JSON object.")
            # Body wins; drop query-string keys it repeats under another spelling.
            for key in list(params):
                if _param(body, key) is not None:
                    del params[key]
            params.update(body)
        site = _param(params, "OwnerSiteId")
        if not isinstance(site, str) or not site:
            raise bad("OwnerSiteId", "Required.")
        state = _param(params, "State")
        cursor = _param(params, "Cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise bad("Cursor", "Must be a string.")
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
                raise bad("body", "Must be a JSON object.")
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
        raw = await request.body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bad("Body", "The body is not UTF-8 text.") from None
        store.set_body(batch_id(request), text)
        return Response(status_code=200)

    async def attachments(request: Request) -> Response:
        if request.method == "DELETE":
            store.set_attachments(batch_id(request), {"Attachments": []})
        else:
            store.set_attachments(batch_id(request), await _json(request))
        return Response(status_code=200)

    async def recipients(request: Request) -> Response:
        if request.method == "DELETE":
            store.clear_recipients(batch_id(request))
        else:
            store.add_recipients(batch_id(request), await _text(request, "Recipients"))
        return Response(status_code=200)

    async def evidence(request: Request) -> Response:
        params = await _json(request, required=False) or {}
        if not isinstance(params, dict):
            raise bad("body", "Must be a JSON object.")
        keys = _param(params, "LookupKeys")
        if keys is not None and not (
            isinstance(keys, list) and all(isinstance(k, str) for k in keys)
        ):
            raise bad("LookupKeys", "Must be a list of strings.")
        texts = {}
        for name in ("Owner", "State", "Outcome", "Cursor"):
            value = _param(params, name)
            if value is not None and not isinstance(value, str):
                raise bad(name, "Must be a string.")
            texts[name] = value or None
        page = store.query_evidence(
            limit=_int_param(params, "Limit", MAX_PAGE_SIZE),
            owner=texts["Owner"],
            lookup_keys=keys,
            state=texts["State"],
            outcome=texts["Outcome"],
            cursor=texts["Cursor"],
        )
        return _JSONResponse(page)

    item = BASE_PATH + "/{batch_id}"
    return [
        Route(BASE_PATH, guarded(collection), methods=["POST", "QUERY"]),
        Route(item, guarded(one), methods=["GET", "PATCH"]),
        Route(item + "/Body", guarded(body), methods=["PUT"]),
        Route(item + "/Attachments", guarded(attachments), methods=["PUT", "DELETE"]),
        Route(item + "/Recipients", guarded(recipients), methods=["POST", "DELETE"]),
        Route(EVIDENCE_PATH, guarded(evidence), methods=["POST"]),
    ]
