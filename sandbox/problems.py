"""RFC 9110 problem-details answers, as both emulated APIs give them."""

from __future__ import annotations

import secrets

import orjson
from starlette.responses import Response

_TYPES = {
    400: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
    401: "https://tools.ietf.org/html/rfc9110#section-15.5.2",
    403: "https://tools.ietf.org/html/rfc9110#section-15.5.4",
    404: "https://tools.ietf.org/html/rfc9110#section-15.5.5",
    409: "https://tools.ietf.org/html/rfc9110#section-15.5.10",
    429: "https://tools.ietf.org/html/rfc6585#section-4",
    500: "https://tools.ietf.org/html/rfc9110#section-15.6.1",
    502: "https://tools.ietf.org/html/rfc9110#section-15.6.3",
    503: "https://tools.ietf.org/html/rfc9110#section-15.6.4",
    504: "https://tools.ietf.org/html/rfc9110#section-15.6.5",
}


def trace_id() -> str:
    """A W3C trace-context style id, as the platform puts in ``traceId``."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"


def problem_body(
    status: int, title: str, detail: str, errors: dict[str, list[str]] | None = None
) -> bytes:
    """The encoded problem-details document."""
    body: dict[str, object] = {
        "type": _TYPES.get(status, "about:blank"),
        "title": title,
        "status": status,
        "detail": detail,
        "traceId": trace_id(),
    }
    if errors:
        body["errors"] = errors
    return orjson.dumps(body)


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    errors: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem-details response."""
    return Response(
        problem_body(status, title, detail, errors),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )
