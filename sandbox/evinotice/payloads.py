"""What the EviNotice sandbox accepts: request payloads checked and parsed as the service does.

Problem details (``SandboxProblem``), batch options, timestamps, the ``|``-separated recipients
text, attachments and list cursors. Nothing here holds state; the store calls these.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from connector.emails import normalize_email
from connector.evinotice.options import EviNoticeOptions
from connector.settings import SANDBOX_EVINOTICE_SITE_ID

BASE_PATH = "/v2/EviNotice/Batches"
# The site the settings fall back to, so a client with default settings lists the seeded batches.
DEFAULT_SITE_ID = SANDBOX_EVINOTICE_SITE_ID
DEFAULT_SITE_NAME = "Sandbox Site"
MAX_RECIPIENTS_PER_REQUEST = 500
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 50
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
MAX_RECIPIENTS_PER_BATCH = 100_000
# Every state the vendor's pages use; the sandbox itself moves batches through the first five.
STATES = ("Draft", "Scheduled", "Submitted", "Processing", "Processed", "Sent", "Completed")

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


def bad(field_name: str, message: str) -> SandboxProblem:
    return SandboxProblem(400, message, {field_name: [message]})


# --- options -------------------------------------------------------------------------------

# Kept on the batch itself rather than among the options; never null.
CORE_FIELDS = ("Description", "Subject", "IssuerName")


def validate_options(payload: Mapping[str, Any], *, allowed_extra: tuple[str, ...]) -> None:
    """Check option names and values as the vendor's PATCH page types them (the project's one
    typed model); ``SandboxProblem(400)`` lists every bad field. Only wire names are known."""
    options = {k: v for k, v in payload.items() if k not in allowed_extra}
    try:
        EviNoticeOptions.model_validate(options, by_alias=True, by_name=False)
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else "body"
            message = "Unknown field." if error["type"] == "extra_forbidden" else error["msg"]
            errors.setdefault(name, []).append(message)
        raise SandboxProblem(400, "One or more validation errors occurred.", errors) from None


def parse_timestamp(value: Any, field_name: str) -> datetime:
    if not isinstance(value, str):
        raise bad(field_name, "Must be an ISO 8601 date and time.")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise bad(field_name, "Must be an ISO 8601 date and time.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # no offset given: read as UTC
    return moment.astimezone(UTC)


# --- recipients ----------------------------------------------------------------------------

_RECIPIENT_COLUMNS = ("Address", "DisplayName", "LegalName", "LookupKey")


def valid_address(address: str) -> bool:
    """An email address, or a phone number with its country code (``+34 600 000 000``)."""
    if "@" in address:
        # The project's one email rule (the service's own is not published).
        return normalize_email(address)[1] is None
    return _PHONE.match(_PHONE_SEPARATORS.sub("", address)) is not None


def parse_recipients(text: str) -> list[dict[str, Any]]:
    """Parse the ``|``-separated recipients text; ``SandboxProblem(400)`` names the bad line."""
    if not text.strip():
        raise bad("Recipients", "The recipients text is empty.")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="|", quotechar='"', strict=True)
    line = 1  # physical line where the next record starts
    try:
        header = next(reader)
    except csv.Error as exc:
        raise bad("Recipients", f"Line 1: malformed header ({exc}).") from None
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
        raise bad("Recipients", f"Line 1: {'; '.join(problems)}.")
    rows: list[dict[str, Any]] = []
    while True:
        start = line
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise bad("Recipients", f"Line {start}: malformed quoting ({exc}).") from None
        line = reader.line_num + 1
        if not record or record == [""]:
            continue  # blank line
        if len(record) != len(columns):
            raise bad(
                "Recipients",
                f"Line {start}: expected {len(columns)} fields, found {len(record)}.",
            )
        values = dict(zip(columns, record, strict=True))
        address = values["Address"].strip()
        if not valid_address(address):
            raise bad(
                "Recipients",
                f"Line {start}: Address {address!r} is neither an email address nor a phone "
                "number with country code.",
            )
        if not values["DisplayName"].strip():
            raise bad("Recipients", f"Line {start}: DisplayName is empty.")
        if len(rows) == MAX_RECIPIENTS_PER_REQUEST:
            raise bad(
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
        raise bad("Recipients", "No recipient lines after the header.")
    return rows


_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")


def fill_placeholders(body: str, recipient: Mapping[str, Any]) -> str:
    """The body one recipient receives: each ``{{Variable}}`` filled from the recipient's extra
    columns (or its fixed ones, such as ``DisplayName``); names match case-insensitively, and
    a placeholder no column fills stays as written."""
    values = {k.lower(): v for k, v in recipient.items() if isinstance(v, str)}
    values.update({k.lower(): v for k, v in (recipient.get("Variables") or {}).items()})

    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1).lower(), match.group(0))

    return _PLACEHOLDER.sub(fill, body)


def recipient_fails(batch_id: str, address: str, fail_permille: int) -> bool:
    local = address.split("@", 1)[0].lower()
    if local.startswith(("fail", "bounce")):
        return True  # lets a user see failures on purpose
    digest = hashlib.blake2b(f"{batch_id}|{address}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % 1000 < fail_permille


def parse_attachments(payload: Any) -> list[dict[str, Any]]:
    """The attachments of ``{"Attachments": [...]}``, checked; the set replaces the batch's."""
    if not isinstance(payload, dict) or set(payload) != {"Attachments"}:
        raise bad("Attachments", 'Must be an object {"Attachments": [...]}.')
    files = payload["Attachments"]
    if not isinstance(files, list):
        raise bad("Attachments", "Must be a list of {DisplayName, FileName, Data} objects.")
    parsed: list[dict[str, Any]] = []
    total = 0
    names: set[str] = set()
    for i, item in enumerate(files):
        where = f"Attachments[{i}]"
        if not isinstance(item, dict):
            raise bad(where, "Must be an object with FileName and Data.")
        unknown = set(item) - {"DisplayName", "FileName", "Data", "Attributes"}
        if unknown:
            raise bad(f"{where}.{sorted(unknown)[0]}", "Unknown field.")
        name, content = item.get("FileName"), item.get("Data")
        display = item.get("DisplayName", name)
        if not isinstance(name, str) or not name.strip():
            raise bad(f"{where}.FileName", "Required.")
        if name in names:
            raise bad(f"{where}.FileName", f"Duplicate file name {name!r}.")
        if display is not None and not isinstance(display, str):
            raise bad(f"{where}.DisplayName", "Must be a string.")
        if not isinstance(content, str):
            raise bad(f"{where}.Data", "Must be a Base64 string.")
        try:
            # Python tolerates surplus padding; .NET's Base64 decoder does not, so neither do we.
            if len(content) % 4:
                raise ValueError("length is not a multiple of 4")
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise bad(f"{where}.Data", f"{name}: not valid Base64.") from None
        total += len(data)
        if total > MAX_ATTACHMENT_BYTES:
            raise bad(f"{where}.Data", f"Attachments exceed {MAX_ATTACHMENT_BYTES} bytes.")
        names.add(name)
        parsed.append(
            {
                "DisplayName": display,
                "FileName": name,
                "Data": base64.b64encode(data).decode("ascii"),
                "Attributes": _attributes(item.get("Attributes"), f"{where}.Attributes"),
            }
        )
    return parsed


def _attributes(value: Any, where: str) -> list[dict[str, Any]]:
    """``[{"Key", "Value"}]`` or ``[{"Key", "Values": [...]}]``: one of the two per key."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(where, "Must be a list of {Key, Value | Values} objects.")
    parsed = []
    for j, attribute in enumerate(value):
        at = f"{where}[{j}]"
        if not isinstance(attribute, dict) or not isinstance(attribute.get("Key"), str):
            raise bad(f"{at}.Key", "Required.")
        given = {"Value", "Values"} & attribute.keys()
        if len(given) != 1 or set(attribute) - {"Key", "Value", "Values"}:
            raise bad(at, "Give Key and exactly one of Value or Values.")
        if "Value" in given and not isinstance(attribute["Value"], str):
            raise bad(f"{at}.Value", "Must be a string.")
        values = attribute.get("Values")
        if "Values" in given and not (
            isinstance(values, list) and all(isinstance(v, str) for v in values)
        ):
            raise bad(f"{at}.Values", "Must be a list of strings.")
        parsed.append(dict(attribute))
    return parsed


# --- cursors -------------------------------------------------------------------------------


def encode_cursor(position: int) -> str:
    """An opaque cursor holding a position in the ordered result, as the service's do
    (the vendor's example cursor decodes to ``{"position":70}``)."""
    raw = orjson.dumps({"position": position})
    return base64.b64encode(raw).decode("ascii")


def decode_cursor(cursor: str) -> int:
    """The position a cursor points at; ``SandboxProblem(400)`` for anything not ours."""
    try:
        data = orjson.loads(base64.b64decode(cursor, validate=True))
        position = data["position"]
    except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError):
        raise bad("Cursor", "Not a cursor this API issued.") from None
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise bad("Cursor", "Not a cursor this API issued.")
    return position
