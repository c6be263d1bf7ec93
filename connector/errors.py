"""The connector's exception tree: every failure the clients raise derives from ``ConnectorError``.

    ConnectorError
    ├── ConfigurationError        a setting is missing or invalid (names the variable)
    ├── RqlBuildError             a filter could not be built from the given values
    ├── ApiError                  the API answered with an error status (problem details parsed)
    │   ├── RateLimitedError      429, ``retry_after`` seconds when the server said so
    │   ├── AuthenticationError   401 / 403
    │   ├── NotFoundError         404 (or 400 saying "not found")
    │   │   └── ContactGoneError  a contact write named a contact that no longer exists
    │   ├── ConflictError         409, or a create rejected because the item already exists
    │   ├── ValidationError       400 / 422, with ``field_errors``
    │   └── ServerError           5xx
    ├── TransportError            no usable answer: timeout, dropped connection, truncated body
    │   └── ConnectionFailedError no connection at all (refused, unknown host): names the host
    ├── AmbiguousOutcomeError     a write may or may not have taken effect; check before retrying
    ├── IncompleteReadError       a collection read did not match the server's own ``total``
    ├── UnreadableRecordError     a record the API sent has a value of the wrong form
    ├── RepeatedKeysError         a read handed the same key twice; nothing changed
    └── MassDeletionError         a full refresh would mark too many rows deleted; nothing changed

``retryable`` tells whether sending the same request again may succeed. Messages never contain
credentials: clients build them from method, path and the server's problem details only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ConnectorError(Exception):
    """Root of every error raised by the connector."""

    retryable: bool = False


class ConfigurationError(ConnectorError):
    """A required setting is missing or invalid."""


class RqlBuildError(ConnectorError, ValueError):
    """An RQL expression could not be built from the values given."""


@dataclass(frozen=True)
class Problem:
    """An RFC 9110 problem-details body, as far as the server filled it in.

    The platform writes it more than one way: ``errors`` as an object of field -> messages or
    as a list of ``{message, properties, id, parameters}``; ``title`` / ``status`` also as
    ``message`` / ``statusCode``. Every form lands in the same fields (an error naming no
    property is kept under the empty field name; ``error_ids`` keeps ids such as
    ``MPTCOM03-0078``). ``status`` is the HTTP status, which wins over the body's.
    """

    status: int
    title: str | None = None
    detail: str | None = None
    type: str | None = None
    trace_id: str | None = None
    field_errors: dict[str, list[str]] = field(default_factory=dict)
    error_ids: tuple[str, ...] = ()

    @classmethod
    def from_response_body(cls, status: int | None, body: Any) -> Problem:
        """Parse a decoded JSON body; anything that is not problem details keeps just the status."""
        if not isinstance(body, dict):
            return cls(status=status or 0)
        field_errors, error_ids = _errors(body.get("errors"))
        if not status:
            status = _status(body.get("status", body.get("statusCode")))
        return cls(
            status=status or 0,
            title=_text(_first(body, "title", "message")),
            detail=_text(body.get("detail")),
            type=_text(body.get("type")),
            trace_id=_text(body.get("traceId")),
            field_errors=field_errors,
            error_ids=error_ids,
        )

    @property
    def says_not_found(self) -> bool:
        """The server says the item does not exist (some operations answer that with 400)."""
        if self.status == 404:
            return True
        # Field errors are left out: "category ... not found" in a body is not the item missing.
        return any("not found" in t.lower() for t in (self.title, self.detail) if t)


def _first(body: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if body.get(key) is not None:
            return body[key]
    return None


def _status(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _errors(errors: Any) -> tuple[dict[str, list[str]], tuple[str, ...]]:
    """``errors`` in either published form: field -> messages, or a list of error objects."""
    field_errors: dict[str, list[str]] = {}
    ids: list[str] = []
    if isinstance(errors, dict):
        for name, messages in errors.items():
            listed = messages if isinstance(messages, list) else [messages]
            field_errors[str(name)] = [str(m) for m in listed]
    elif isinstance(errors, list):
        for item in errors:
            if not isinstance(item, dict):
                field_errors.setdefault("", []).append(str(item))
                continue
            message = str(_first(item, "message", "detail", "title") or "")
            properties = item.get("properties")
            names = [str(p) for p in properties] if isinstance(properties, list) else []
            for name in names or [""]:
                field_errors.setdefault(name, []).append(message)
            if item.get("id") is not None:
                ids.append(str(item["id"]))
    return field_errors, tuple(ids)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class ApiError(ConnectorError):
    """The API answered with an error status."""

    def __init__(self, method: str, path: str, problem: Problem) -> None:
        self.method = method
        self.path = path
        self.problem = problem
        parts = [f"{method} {path} -> {problem.status}"]
        if problem.title:
            parts.append(problem.title)
        if problem.detail:
            parts.append(problem.detail)
        if problem.field_errors:
            fields = "; ".join(
                f"{k}: {', '.join(v)}" if k else ", ".join(v)
                for k, v in problem.field_errors.items()
            )
            parts.append(f"[{fields}]")
        if problem.trace_id:
            parts.append(f"(trace {problem.trace_id})")
        super().__init__(" ".join(parts[:1]) + (": " + " ".join(parts[1:]) if parts[1:] else ""))

    @property
    def status(self) -> int:
        return self.problem.status


class RateLimitedError(ApiError):
    retryable = True

    def __init__(
        self, method: str, path: str, problem: Problem, retry_after: float | None = None
    ) -> None:
        super().__init__(method, path, problem)
        self.retry_after = retry_after


class AuthenticationError(ApiError):
    pass


class NotFoundError(ApiError):
    """404, or a 400 whose problem details say the item was not found."""


class ContactGoneError(NotFoundError):
    """The contact a write names no longer exists (deleted on the platform): not worth a retry,
    and not a bug in the request. Block / unblock / update answer it with 400 "not found"."""


class ConflictError(ApiError):
    pass


class ValidationError(ApiError):
    pass


class ServerError(ApiError):
    retryable = True


class TransportError(ConnectorError):
    """No usable answer arrived: timeout, dropped connection or a truncated body."""

    retryable = True


class ConnectionFailedError(TransportError):
    """No connection could be made (refused, unknown host, no route): nothing was sent.

    Already retried by the HTTP client over a few seconds; a caller should not retry it again."""


class AmbiguousOutcomeError(ConnectorError):
    """A write that is not safe to repeat failed in a way that leaves its effect unknown."""

    def __init__(self, method: str, path: str, cause: BaseException) -> None:
        self.method = method
        self.path = path
        super().__init__(
            f"{method} {path}: outcome unknown ({type(cause).__name__}); "
            "check the current state before sending it again"
        )


class IncompleteReadError(ConnectorError):
    """A collection read did not add up to the count the server reported."""

    retryable = True


def error_for_status(
    method: str, path: str, problem: Problem, retry_after: float | None = None
) -> ApiError:
    """Pick the ``ApiError`` subclass that fits an HTTP status."""
    status = problem.status
    if status == 429:
        return RateLimitedError(method, path, problem, retry_after)
    if status in (401, 403):
        return AuthenticationError(method, path, problem)
    if status == 404:
        return NotFoundError(method, path, problem)
    if status == 409:
        return ConflictError(method, path, problem)
    if status in (400, 422):
        return ValidationError(method, path, problem)
    if status >= 500:
        return ServerError(method, path, problem)
    return ApiError(method, path, problem)


class MassDeletionError(ConnectorError):
    """A full refresh would mark more than the allowed share of live rows deleted; the load was
    rolled back. Pass an override reason to the sync to let it through (it is recorded)."""

    def __init__(self, table: str, missing: int, live: int, max_share: float) -> None:
        self.table = table
        self.missing = missing
        self.live = live
        self.max_share = max_share
        super().__init__(
            f"full refresh of {table} would mark {missing} of {live} rows deleted "
            f"({missing / live:.1%}, more than the {max_share:.0%} allowed); nothing was "
            "changed. If the API really lost them, run again with an override reason."
        )


class UnreadableRecordError(ConnectorError):
    """A record the API sent could not be turned into its table's columns (a value of the
    wrong form, or a line that is not JSON); the load stopped before writing anything."""

    def __init__(self, collection: str, record: str, cause: str) -> None:
        self.collection = collection
        self.record = record
        self.cause = cause
        super().__init__(
            f"{collection}: {record} could not be read ({cause}); nothing was changed. "
            "The API sent a value of a form this connector does not know: report it with "
            "the record."
        )


class RepeatedKeysError(ConnectorError):
    """A load got the same key more than once in what it was about to write (the API handed
    a row twice); the load was rolled back rather than keep two rows for one key."""

    def __init__(self, table: str, repeated: int) -> None:
        self.table = table
        self.repeated = repeated
        super().__init__(
            f"the read of {table} handed {repeated} key(s) more than once; nothing was "
            "changed. Run again: the next read normally hands each row once."
        )
